// MetaMorph's visual-token adapter (SimplifiedSigLIPProjector of inference/adapter.py):
//   mlp:      x = relu(norms[i](layers[i](x))) for every layer but the last; norms[-1](layers[-1](x))
//   xattn:    tokens = token_embeddings; xp = input_norm(proj(x));
//             per block: tokens = norm1(tokens + MHA(tokens, xp, xp))
//   xattnffn: ... then tokens = norm2(tokens + ffn.2(relu(ffn.0(tokens))))
// LayerNorm eps 1e-5 (torch default). nn.MultiheadAttention packs q/k/v in in_proj_weight.
import MetamorphCore
import MetamorphKernels
import MetamorphModels

struct XAttnBlock {
    let q, k, v, o: Linear
    let norm1w, norm1b: Tensor
    let ffn1, ffn2: Linear?
    let norm2w, norm2b: Tensor?
}

public final class Adapter: @unchecked Sendable {
    public let config: AdapterConfig
    let store: TensorStore
    var layers: [Linear] = []
    var norms: [(Tensor, Tensor)] = []
    var tokenEmbeddings: [Float] = []
    var proj: Linear? = nil
    var inputNorm: (Tensor, Tensor)? = nil
    var blocks: [XAttnBlock] = []

    public convenience init(directory: String) throws {
        let files = CheckpointFiles(directory: directory)
        let cfg = try AdapterConfig.parse(try files.open("config.json").json(what: directory + "/config.json"), file: directory + "/config.json")
        try self.init(config: cfg, store: try TensorStore.load(files))
    }

    public init(config c: AdapterConfig, store s: TensorStore) throws {
        config = c; store = s
        func ln(_ p: String, _ d: Int) throws -> (Tensor, Tensor) { (try s.get(p + ".weight", shape: [d]), try s.get(p + ".bias", shape: [d])) }
        if c.mode == "mlp" {
            let n = max(c.numLayers, 2)
            for i in 0..<n {
                let inF = i == 0 ? c.inputDim : c.hiddenDim, outF = i == n - 1 ? c.outputDim : c.hiddenDim
                layers.append(try Linear(s, "layers.\(i)", out: outF, in: inF, bias: true))
                norms.append(try ln("norms.\(i)", outF))
            }
        } else {
            let e = c.outputDim
            tokenEmbeddings = try s.get("token_embeddings", shape: [1, c.numTokens, e]).toFloat()
            proj = try Linear(s, "proj", out: e, in: c.inputDim, bias: true)
            inputNorm = try ln("input_norm", e)
            for i in 0..<c.numLayers {
                let p = "cross_attn_layers.\(i)"
                let w = try s.get(p + ".cross_attn.in_proj_weight", shape: [3 * e, e])
                let b = try floats(s, p + ".cross_attn.in_proj_bias", 3 * e)
                let es = w.dtype.size * e * e
                func part(_ k: Int) -> Linear {
                    Linear(weight: Tensor(name: w.name, dtype: w.dtype, shape: [e, e], data: w.data + k * es), bias: Array(b[(k * e)..<((k + 1) * e)]))
                }
                let n1 = try ln(p + ".norm1", e)
                let ffn = c.mode == "xattnffn"
                blocks.append(XAttnBlock(
                    q: part(0), k: part(1), v: part(2),
                    o: try Linear(s, p + ".cross_attn.out_proj", out: e, in: e, bias: true),
                    norm1w: n1.0, norm1b: n1.1,
                    ffn1: ffn ? try Linear(s, p + ".ffn.0", out: 4 * e, in: e, bias: true) : nil,
                    ffn2: ffn ? try Linear(s, p + ".ffn.2", out: e, in: 4 * e, bias: true) : nil,
                    norm2w: ffn ? try ln(p + ".norm2", e).0 : nil, norm2b: ffn ? try ln(p + ".norm2", e).1 : nil))
            }
        }
    }

    /// Rows produced for `count` input tokens: count in mlp mode, num_tokens otherwise.
    public func outputRows(inputCount: Int) -> Int { config.mode == "mlp" ? inputCount : config.numTokens }

    /// tokens [count][input_dim] -> [outputRows][output_dim].
    public func callAsFunction(_ x: [Float], count: Int, threads: Int) throws -> [Float] {
        let c = config
        guard count > 0, x.count == count * c.inputDim else {
            throw MMError.invalidArgument("adapter: got \(x.count) floats for \(count) tokens of dim \(c.inputDim)")
        }
        if c.mode == "mlp" {
            var h = x
            for (i, l) in layers.enumerated() {
                h = l.apply(h, rows: count, threads: threads)
                h = layerNorm(h, w: norms[i].0, b: norms[i].1, rows: count, dim: l.outFeatures, eps: 1e-5, threads: threads)
                if i < layers.count - 1 { h.withUnsafeMutableBufferPointer { p in for j in 0..<p.count where p[j] < 0 { p[j] = 0 } } }
            }
            return h
        }
        let e = c.outputDim, nt = c.numTokens
        var xp = proj!.apply(x, rows: count, threads: threads)
        xp = layerNorm(xp, w: inputNorm!.0, b: inputNorm!.1, rows: count, dim: e, eps: 1e-5, threads: threads)
        var t = tokenEmbeddings
        for blk in blocks {
            let q = blk.q.apply(t, rows: nt, threads: threads)
            let k = blk.k.apply(xp, rows: count, threads: threads)
            let v = blk.v.apply(xp, rows: count, threads: threads)
            var a = [Float](repeating: 0, count: nt * e)
            q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in a.withUnsafeMutableBufferPointer { ap in
                attention(qp.baseAddress!, kp.baseAddress!, vp.baseAddress!, ap.baseAddress!, nq: nt, nkv: count, heads: c.numHeads, headDim: e / c.numHeads, threads: threads)
            } } } }
            addInPlace(&t, blk.o.apply(a, rows: nt, threads: threads), threads: threads)
            t = layerNorm(t, w: blk.norm1w, b: blk.norm1b, rows: nt, dim: e, eps: 1e-5, threads: threads)
            if let f1 = blk.ffn1, let f2 = blk.ffn2 {
                var hdn = f1.apply(t, rows: nt, threads: threads)
                hdn.withUnsafeMutableBufferPointer { p in for j in 0..<p.count where p[j] < 0 { p[j] = 0 } }
                addInPlace(&t, f2.apply(hdn, rows: nt, threads: threads), threads: threads)
                t = layerNorm(t, w: blk.norm2w!, b: blk.norm2b!, rows: nt, dim: e, eps: 1e-5, threads: threads)
            }
        }
        return t
    }
}
