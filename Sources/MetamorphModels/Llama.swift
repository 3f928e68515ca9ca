// The LLaMA decoder (transformers' modeling_llama.py, LlamaForCausalLM), over memory-mapped
// weights in their stored dtype. Pre-norm blocks: x += o(attn(rope(q), rope(k), v)) on
// RMSNorm(x); x += down(silu(gate(h)) * up(h)) on RMSNorm(x); final RMSNorm; lm_head.
// Hot loops are MetamorphKernels calls; this file only sequences them.
import MetamorphCore
import MetamorphKernels

/// A Linear layer: weight [out][in] in its stored dtype, optional float32 bias.
public struct Linear: @unchecked Sendable {
    public let weight: Tensor
    public let bias: [Float]?
    public var outFeatures: Int { weight.shape[0] }
    public var inFeatures: Int { weight.shape[1] }

    public init(_ store: TensorStore, _ prefix: String, out: Int, in inF: Int, bias hasBias: Bool) throws {
        weight = try store.get(prefix + ".weight", shape: [out, inF])
        bias = hasBias ? try store.get(prefix + ".bias", shape: [out]).toFloat() : nil
    }
    public init(weight: Tensor, bias: [Float]?) { self.weight = weight; self.bias = bias }

    /// y[m][out] = x[m][in] W^T + b. m == 1 takes the matrix-vector path inside the kernel.
    public func callAsFunction(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows m: Int, threads: Int) {
        if let bias {
            bias.withUnsafeBufferPointer { b in
                mmk_matmul(weight.dtype.kernelCode, weight.data, b.baseAddress, x, y, Int64(m), Int64(outFeatures), Int64(inFeatures), Int32(threads))
            }
        } else {
            mmk_matmul(weight.dtype.kernelCode, weight.data, nil, x, y, Int64(m), Int64(outFeatures), Int64(inFeatures), Int32(threads))
        }
    }
}

public struct LlamaLayer: @unchecked Sendable {
    let inputNorm: Tensor            // input_layernorm.weight [hidden]
    let q, k, v, o: Linear           // self_attn.{q,k,v,o}_proj
    let postNorm: Tensor             // post_attention_layernorm.weight [hidden]
    let gate, up, down: Linear       // mlp.{gate,up,down}_proj
}

/// The per-session key/value cache: for each layer, float32 rows [position][kvHeads * headDim].
/// Grows by doubling up to its limit so a short chat does not reserve the whole context.
public final class KVCache {
    public let layers: Int
    public let rowWidth: Int
    public let limit: Int
    public private(set) var capacity = 0
    var k: [UnsafeMutablePointer<Float>] = []
    var v: [UnsafeMutablePointer<Float>] = []

    public init(layers: Int, rowWidth: Int, limit: Int) {
        self.layers = layers; self.rowWidth = rowWidth; self.limit = limit
    }
    deinit { for p in k + v { p.deallocate() } }

    public var bytes: Int { 2 * layers * capacity * rowWidth * 4 }

    /// Make room for `rows` positions in total.
    public func reserve(_ rows: Int) {
        guard rows > capacity else { return }
        let newCap = min(limit, max(rows, max(64, capacity * 2)))
        for l in 0..<layers {
            for which in 0..<2 {
                let p = UnsafeMutablePointer<Float>.allocate(capacity: newCap * rowWidth)
                if capacity > 0 {
                    let old = which == 0 ? k[l] : v[l]
                    p.update(from: old, count: capacity * rowWidth)
                    old.deallocate()
                }
                if which == 0 { if l < k.count { k[l] = p } else { k.append(p) } } else { if l < v.count { v[l] = p } else { v.append(p) } }
            }
        }
        capacity = newCap
    }
}

/// Reusable activation buffers, grown on demand.
final class Workspace {
    var buffers: [UnsafeMutablePointer<Float>] = []
    var sizes: [Int] = []
    func get(_ slot: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot { buffers.append(.allocate(capacity: 1)); sizes.append(1) }
        if sizes[slot] < count {
            buffers[slot].deallocate()
            buffers[slot] = .allocate(capacity: count)
            sizes[slot] = count
        }
        return buffers[slot]
    }
    deinit { for b in buffers { b.deallocate() } }
}

public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    let embedTokens: Tensor          // model.embed_tokens.weight [vocab][hidden]
    let layers: [LlamaLayer]
    let norm: Tensor                 // model.norm.weight [hidden]
    let lmHead: Linear               // lm_head.weight [vocab][hidden], or the embeddings when tied
    let invFreq: [Float]
    public var hiddenSize: Int { config.hiddenSize }
    public var vocabSize: Int { config.vocabSize }

    public init(config c: LlamaConfig, store: TensorStore) throws {
        config = c
        let h = c.hiddenSize, qDim = c.numAttentionHeads * c.headDim, kvDim = c.numKeyValueHeads * c.headDim
        embedTokens = try store.get("model.embed_tokens.weight", shape: [c.vocabSize, h])
        var ls: [LlamaLayer] = []
        for i in 0..<c.numHiddenLayers {
            let p = "model.layers.\(i)"
            ls.append(LlamaLayer(
                inputNorm: try store.get("\(p).input_layernorm.weight", shape: [h]),
                q: try Linear(store, "\(p).self_attn.q_proj", out: qDim, in: h, bias: c.attentionBias),
                k: try Linear(store, "\(p).self_attn.k_proj", out: kvDim, in: h, bias: c.attentionBias),
                v: try Linear(store, "\(p).self_attn.v_proj", out: kvDim, in: h, bias: c.attentionBias),
                o: try Linear(store, "\(p).self_attn.o_proj", out: h, in: qDim, bias: c.attentionBias),
                postNorm: try store.get("\(p).post_attention_layernorm.weight", shape: [h]),
                gate: try Linear(store, "\(p).mlp.gate_proj", out: c.intermediateSize, in: h, bias: c.mlpBias),
                up: try Linear(store, "\(p).mlp.up_proj", out: c.intermediateSize, in: h, bias: c.mlpBias),
                down: try Linear(store, "\(p).mlp.down_proj", out: h, in: c.intermediateSize, bias: c.mlpBias)))
        }
        layers = ls
        norm = try store.get("model.norm.weight", shape: [h])
        if c.tieWordEmbeddings && !store.has("lm_head.weight") {
            lmHead = Linear(weight: embedTokens, bias: nil)
        } else {
            lmHead = try Linear(store, "lm_head", out: c.vocabSize, in: h, bias: false)
        }
        invFreq = c.ropeInvFreq()
    }

    public func makeCache(limit: Int) -> KVCache {
        KVCache(layers: config.numHiddenLayers, rowWidth: config.numKeyValueHeads * config.headDim, limit: limit)
    }

    /// Write the embeddings of `tokens` (all in 0..<vocab, checked by the caller) into out[n][hidden].
    public func embed(_ tokens: [Int32], into out: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize
        let rowBytes = h * embedTokens.dtype.size
        for (i, t) in tokens.enumerated() {
            mmk_convert_to_f32(embedTokens.dtype.kernelCode, embedTokens.data + Int(t) * rowBytes, out + i * h, Int64(h))
        }
    }


    /// Run the decoder on n input embeddings x[n][hidden] at positions pos0..<pos0+n, appending
    /// their keys and values to `cache` (which must already hold positions 0..<pos0).
    /// On return x holds the final-normed hidden states of all n rows.
    public func forward(_ x: UnsafeMutablePointer<Float>, count n: Int, pos0: Int, cache: KVCache, threads: Int, ws: LlamaWorkspace) {
        let c = config
        let h = c.hiddenSize, hd = c.headDim
        let qDim = c.numAttentionHeads * hd, kvDim = c.numKeyValueHeads * hd
        let th = Int32(threads)
        cache.reserve(pos0 + n)
        let xn = ws.w.get(0, n * h)
        let q = ws.w.get(1, n * qDim)
        let att = ws.w.get(2, n * qDim)
        let g = ws.w.get(3, n * c.intermediateSize)
        let u = ws.w.get(4, n * c.intermediateSize)
        let tmp = ws.w.get(5, n * h)
        var pos = [Int32](repeating: 0, count: n)
        for i in 0..<n { pos[i] = Int32(pos0 + i) }
        let scale = 1 / Float(hd).squareRoot()
        pos.withUnsafeBufferPointer { posp in
            invFreq.withUnsafeBufferPointer { inv in
                for (l, L) in layers.enumerated() {
                    mmk_rmsnorm(xn, x, L.inputNorm.dtype.kernelCode, L.inputNorm.data, Int64(n), Int64(h), c.rmsNormEps, th)
                    let kRows = cache.k[l] + pos0 * kvDim
                    let vRows = cache.v[l] + pos0 * kvDim
                    L.q(xn, q, rows: n, threads: threads)
                    L.k(xn, kRows, rows: n, threads: threads)
                    L.v(xn, vRows, rows: n, threads: threads)
                    mmk_rope(q, posp.baseAddress, Int64(n), Int32(c.numAttentionHeads), Int32(hd), inv.baseAddress, th)
                    mmk_rope(kRows, posp.baseAddress, Int64(n), Int32(c.numKeyValueHeads), Int32(hd), inv.baseAddress, th)
                    mmk_attention(att, q, cache.k[l], cache.v[l], Int64(n), Int64(pos0), Int64(pos0 + n),
                                  Int32(c.numAttentionHeads), Int32(c.numKeyValueHeads), Int32(hd), Int64(kvDim), scale, th)
                    L.o(att, tmp, rows: n, threads: threads)
                    mmk_add(x, tmp, Int64(n * h), th)
                    mmk_rmsnorm(xn, x, L.postNorm.dtype.kernelCode, L.postNorm.data, Int64(n), Int64(h), c.rmsNormEps, th)
                    L.gate(xn, g, rows: n, threads: threads)
                    L.up(xn, u, rows: n, threads: threads)
                    mmk_silu_mul(g, u, Int64(n * c.intermediateSize), th)
                    L.down(g, tmp, rows: n, threads: threads)
                    mmk_add(x, tmp, Int64(n * h), th)
                }
            }
        }
        mmk_rmsnorm(x, x, norm.dtype.kernelCode, norm.data, Int64(n), Int64(h), c.rmsNormEps, th)
    }

    /// logits[vocab] of one final-normed hidden state.
    public func logits(_ hidden: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, threads: Int) {
        lmHead(hidden, out, rows: 1, threads: threads)
    }
}

/// Activation buffers of one session (sessions run in parallel on one shared model).
public final class LlamaWorkspace {
    let w = Workspace()
    public init() {}
}


#if canImport(Glibc)
import Glibc
#endif
