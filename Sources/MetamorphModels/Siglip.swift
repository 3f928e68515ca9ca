// The SigLIP vision transformer (transformers' SiglipVisionModel / SiglipVisionTransformer), the
// frozen vision tower of MetaMorph. Only what MetaMorph reads is computed: the patch embedding,
// learned position embedding and the first k encoder layers, where k follows from the selected
// hidden state. post_layernorm and the attention-pooling head are never used (METAMORPH.md 1).
//   embeddings = Conv2d(3, hidden, patch, stride patch)(pixels).flatten(2).T + pos_embedding
//   layer: x += out_proj(attn(q, k, v of LN1(x)))  (non-causal, scale head_dim^-0.5)
//          x += fc2(act(fc1(LN2(x))))
// hidden_states[0] is the embeddings, hidden_states[i] the output of layer i; -1 is the last layer
// before post_layernorm. Hot loops are MetamorphKernels calls.
import MetamorphCore
import MetamorphKernels

public struct SiglipVisionConfig: Sendable, Equatable {
    public var hiddenSize: Int = 768           // hidden_size
    public var intermediateSize: Int = 3072    // intermediate_size
    public var numHiddenLayers: Int = 12       // num_hidden_layers
    public var numAttentionHeads: Int = 12     // num_attention_heads
    public var numChannels: Int = 3            // num_channels
    public var imageSize: Int = 224            // image_size
    public var patchSize: Int = 16             // patch_size
    public var layerNormEps: Float = 1e-6      // layer_norm_eps
    public var hiddenAct: String = "gelu_pytorch_tanh"  // hidden_act

    public init() {}

    public var gridSide: Int { imageSize / patchSize }
    public var numPatches: Int { gridSide * gridSide }
    public var headDim: Int { hiddenSize / numAttentionHeads }
    /// true: the tanh approximation; false: exact erf GELU.
    public var geluTanh: Bool { hiddenAct != "gelu" }

    /// The shapes of google/siglip-so400m-patch14-384 (MetaMorph's tower).
    public static var so400m384: SiglipVisionConfig {
        var c = SiglipVisionConfig()
        c.hiddenSize = 1152; c.intermediateSize = 4304; c.numHiddenLayers = 27; c.numAttentionHeads = 16
        c.imageSize = 384; c.patchSize = 14
        return c
    }

    /// Parse a SigLIP config: a vision config object, or a full SiglipConfig with `vision_config`.
    /// Missing keys take transformers' SiglipVisionConfig defaults.
    public static func parse(_ root: JSON, file: String = "config.json") throws -> SiglipVisionConfig {
        func fail(_ m: String) -> MMError { MMError.format("\(file): \(m)") }
        guard root.objectKeys != nil else { throw fail("not a JSON object") }
        var j = root
        if let v = root["vision_config"], !v.isNull {
            guard v.objectKeys != nil else { throw fail("vision_config must be an object") }
            j = v
        }
        func int(_ k: String, _ d: Int) throws -> Int {
            guard let v = j[k], !v.isNull else { return d }
            guard let i = v.int else { throw fail("\(k) must be an integer") }
            return i
        }
        var c = SiglipVisionConfig()
        c.hiddenSize = try int("hidden_size", c.hiddenSize)
        c.intermediateSize = try int("intermediate_size", c.intermediateSize)
        c.numHiddenLayers = try int("num_hidden_layers", c.numHiddenLayers)
        c.numAttentionHeads = try int("num_attention_heads", c.numAttentionHeads)
        c.numChannels = try int("num_channels", c.numChannels)
        c.imageSize = try int("image_size", c.imageSize)
        c.patchSize = try int("patch_size", c.patchSize)
        if let v = j["layer_norm_eps"], !v.isNull {
            guard let d = v.double, d > 0 else { throw fail("layer_norm_eps must be a positive number") }
            c.layerNormEps = Float(d)
        }
        if let v = j["hidden_act"], !v.isNull {
            guard let s = v.string else { throw fail("hidden_act must be a string") }
            c.hiddenAct = s
        }
        try c.validate(file: file)
        return c
    }

    public func validate(file: String = "config.json") throws {
        func fail(_ m: String) -> MMError { MMError.format("\(file): \(m)") }
        guard ["gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu"].contains(hiddenAct) else {
            throw MMError.unsupported("\(file): vision hidden_act \"\(hiddenAct)\" is not supported (gelu_pytorch_tanh, gelu_new, gelu_fast, gelu)")
        }
        guard numChannels == 3 else { throw MMError.unsupported("\(file): num_channels \(numChannels) is not supported (3)") }
        guard hiddenSize > 0, intermediateSize > 0, numAttentionHeads > 0, numHiddenLayers >= 0,
              imageSize > 0, patchSize > 0 else { throw fail("vision sizes must be positive") }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw fail("vision hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numAttentionHeads)")
        }
        // Conv2d(stride = patch) drops a remainder: so400m has 384 = 27 * 14 + 6.
        guard imageSize >= patchSize else { throw fail("image_size \(imageSize) is smaller than patch_size \(patchSize)") }
        guard hiddenSize < 1 << 16, intermediateSize < 1 << 18, numHiddenLayers < 1024, imageSize <= 8192,
              numPatches < 1 << 16 else { throw fail("vision sizes out of the supported range") }
    }
}

struct SiglipLayer: @unchecked Sendable {
    let ln1w, ln1b, ln2w, ln2b: Tensor
    let q, k, v, o: Linear
    let fc1, fc2: Linear
}

/// The SigLIP vision tower over memory-mapped weights in their stored dtype.
public final class SiglipVisionTower: @unchecked Sendable {
    public let config: SiglipVisionConfig
    public let prefix: String
    let patch: Linear            // embeddings.patch_embedding as [hidden][3*p*p]
    let position: [Float]        // embeddings.position_embedding.weight [numPatches][hidden]
    let layers: [SiglipLayer]    // only the layers that can be selected are kept

    /// Name prefixes of the tower: inside a MetaMorph checkpoint (the module tree
    /// model.vision_tower.vision_tower = SiglipVisionTransformer) or a separate SigLIP release.
    public static let checkpointPrefixes = ["model.vision_tower.vision_tower.", "model.vision_tower.vision_tower.vision_model."]
    public static let releasePrefix = "vision_model."

    /// The prefix under which `store` holds the tower's patch embedding, or nil.
    public static func weightPrefix(in store: TensorStore) -> String? {
        for p in checkpointPrefixes + [releasePrefix] where store.has(p + "embeddings.patch_embedding.weight") {
            return p
        }
        return nil
    }

    /// Where the tower is: the checkpoint first, then a separate SigLIP directory's store.
    public static func locate(checkpoint: TensorStore, separate: TensorStore? = nil) throws -> (store: TensorStore, prefix: String) {
        if let p = weightPrefix(in: checkpoint) { return (checkpoint, p) }
        if let s = separate, let p = weightPrefix(in: s) { return (s, p) }
        throw MMError.format("no SigLIP weights: expected model.vision_tower.vision_tower.* in the checkpoint or a separate SigLIP directory (vision_model.*)")
    }

    /// Load the tower. `maxLayers` limits how many encoder layers are mapped (nil: all).
    public init(config c: SiglipVisionConfig, store: TensorStore, prefix: String, maxLayers: Int? = nil) throws {
        try c.validate()
        config = c
        self.prefix = prefix
        let h = c.hiddenSize, p = c.patchSize
        let pw = try store.get(prefix + "embeddings.patch_embedding.weight", shape: [h, c.numChannels, p, p])
        let flat = Tensor(name: pw.name, dtype: pw.dtype, shape: [h, c.numChannels * p * p], data: pw.data)
        patch = Linear(weight: flat, bias: try store.get(prefix + "embeddings.patch_embedding.bias", shape: [h]).toFloat())
        position = try store.get(prefix + "embeddings.position_embedding.weight", shape: [c.numPatches, h]).toFloat()
        let n = min(maxLayers ?? c.numHiddenLayers, c.numHiddenLayers)
        var ls: [SiglipLayer] = []
        for i in 0..<max(n, 0) {
            let lp = "\(prefix)encoder.layers.\(i)."
            ls.append(SiglipLayer(
                ln1w: try store.get(lp + "layer_norm1.weight", shape: [h]),
                ln1b: try store.get(lp + "layer_norm1.bias", shape: [h]),
                ln2w: try store.get(lp + "layer_norm2.weight", shape: [h]),
                ln2b: try store.get(lp + "layer_norm2.bias", shape: [h]),
                q: try Linear(store, lp + "self_attn.q_proj", out: h, in: h, bias: true),
                k: try Linear(store, lp + "self_attn.k_proj", out: h, in: h, bias: true),
                v: try Linear(store, lp + "self_attn.v_proj", out: h, in: h, bias: true),
                o: try Linear(store, lp + "self_attn.out_proj", out: h, in: h, bias: true),
                fc1: try Linear(store, lp + "mlp.fc1", out: c.intermediateSize, in: h, bias: true),
                fc2: try Linear(store, lp + "mlp.fc2", out: h, in: c.intermediateSize, bias: true)))
        }
        layers = ls
    }

    /// Number of encoder layers that produce hidden_states[selectLayer] (HF indexing, negative
    /// from the end: -1 = the last layer's output).
    public func layersNeeded(selectLayer: Int) throws -> Int {
        let total = config.numHiddenLayers
        let idx = selectLayer < 0 ? total + 1 + selectLayer : selectLayer
        guard idx >= 0, idx <= total else {
            throw MMError.invalidArgument("mm_vision_select_layer \(selectLayer) is out of range for a \(total)-layer vision tower")
        }
        guard idx <= layers.count else {
            throw MMError.invalidArgument("mm_vision_select_layer \(selectLayer) needs \(idx) layers but only \(layers.count) were loaded")
        }
        return idx
    }

    /// Floats per input image: 3 * image_size^2 (CHW, already normalised).
    public var pixelCount: Int { config.numChannels * config.imageSize * config.imageSize }

    /// hidden_states[selectLayer] of one image: [numPatches][hidden].
    public func encode(pixels: [Float], selectLayer: Int, threads: Int) throws -> [Float] {
        try encode(batch: pixels, count: 1, selectLayer: selectLayer, threads: threads)
    }

    /// Several images at once: pixels holds `count` CHW images back to back; the result holds
    /// count x [numPatches][hidden]. Matmuls run over all patches of the batch together.
    public func encode(batch pixels: [Float], count b: Int, selectLayer: Int, threads: Int) throws -> [Float] {
        guard b > 0 else { throw MMError.invalidArgument("encode: image count must be positive") }
        guard pixels.count == b * pixelCount else {
            throw MMError.invalidArgument("encode: got \(pixels.count) floats, expected \(b) x 3 x \(config.imageSize) x \(config.imageSize)")
        }
        let nLayers = try layersNeeded(selectLayer: selectLayer)
        let c = config
        let h = c.hiddenSize, np = c.numPatches, p = c.patchSize, g = c.gridSide, s = c.imageSize
        let rows = b * np
        let kdim = c.numChannels * p * p
        let th = Int32(threads)
        var x = [Float](repeating: 0, count: rows * h)
        // im2col: row = image * np + py * g + px, column = (channel, ky, kx) like the conv weight.
        var cols = [Float](repeating: 0, count: rows * kdim)
        pixels.withUnsafeBufferPointer { src in
            cols.withUnsafeMutableBufferPointer { dst in
                for im in 0..<b {
                    let img = src.baseAddress! + im * pixelCount
                    for py in 0..<g {
                        for px in 0..<g {
                            var d = dst.baseAddress! + ((im * np + py * g + px) * kdim)
                            for ch in 0..<c.numChannels {
                                for ky in 0..<p {
                                    let row = img + ch * s * s + (py * p + ky) * s + px * p
                                    d.update(from: row, count: p)
                                    d += p
                                }
                            }
                        }
                    }
                }
            }
        }
        x.withUnsafeMutableBufferPointer { xp in
            let X = xp.baseAddress!
            cols.withUnsafeBufferPointer { patch($0.baseAddress!, X, rows: rows, threads: threads) }
            position.withUnsafeBufferPointer { pos in
                for im in 0..<b { mmk_add(X + im * np * h, pos.baseAddress, Int64(np * h), th) }
            }
            guard nLayers > 0 else { return }
            let xn = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
            let q = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
            let k = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
            let att = UnsafeMutablePointer<Float>.allocate(capacity: rows * h)
            let mid = UnsafeMutablePointer<Float>.allocate(capacity: rows * c.intermediateSize)
            defer { for buf in [xn, q, k, v, att, mid] { buf.deallocate() } }
            let scale = 1 / Float(c.headDim).squareRoot()
            let eps = c.layerNormEps
            for L in layers[0..<nLayers] {
                mmk_layernorm(xn, X, L.ln1w.dtype.kernelCode, L.ln1w.data, L.ln1b.data, Int64(rows), Int64(h), eps, th)
                L.q(xn, q, rows: rows, threads: threads)
                L.k(xn, k, rows: rows, threads: threads)
                L.v(xn, v, rows: rows, threads: threads)
                for im in 0..<b {
                    let off = im * np * h
                    mmk_attention_full_gemm(att + off, q + off, k + off, v + off, Int64(np), Int64(np),
                                            Int32(c.numAttentionHeads), Int32(c.headDim), Int64(h), Int64(h), Int64(h), scale, th)
                }
                L.o(att, xn, rows: rows, threads: threads)
                mmk_add(X, xn, Int64(rows * h), th)
                mmk_layernorm(xn, X, L.ln2w.dtype.kernelCode, L.ln2w.data, L.ln2b.data, Int64(rows), Int64(h), eps, th)
                L.fc1(xn, mid, rows: rows, threads: threads)
                if c.geluTanh {
                    mmk_gelu_tanh(mid, Int64(rows * c.intermediateSize), th)
                } else {
                    mmk_gelu_erf(mid, Int64(rows * c.intermediateSize), th)
                }
                L.fc2(mid, xn, rows: rows, threads: threads)
                mmk_add(X, xn, Int64(rows * h), th)
            }
        }
        return x
    }
}
