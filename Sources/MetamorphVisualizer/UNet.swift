// diffusers' UNet2DConditionModel (the Stable Diffusion 1.x layout), driven by its config:
//   t -> sinusoidal embedding (flip_sin_to_cos, freq_shift) -> linear_1 -> SiLU -> linear_2 = temb
//   conv_in -> down blocks (ResnetBlock2D [+ Transformer2DModel], Downsample2D) -> mid block
//   (resnet, transformer, resnet) -> up blocks (concatenated skips, resnets [+ transformers],
//   Upsample2D) -> GroupNorm + SiLU -> conv_out.
// Transformer2DModel: GroupNorm(eps 1e-6) -> proj_in -> BasicTransformerBlock x n (LayerNorm +
// self-attention, LayerNorm + cross-attention to the condition, LayerNorm + GEGLU feed-forward,
// each residual) -> proj_out -> + input.
#if canImport(Glibc)
import Glibc
#endif
import MetamorphCore
import MetamorphKernels
import MetamorphModels

struct AttentionWeights {
    let q, k, v, o: Linear
    init(_ s: TensorStore, _ p: String, dim: Int, kvDim: Int, inner: Int) throws {
        q = try Linear(s, p + ".to_q", out: inner, in: dim, bias: false)
        k = try Linear(s, p + ".to_k", out: inner, in: kvDim, bias: false)
        v = try Linear(s, p + ".to_v", out: inner, in: kvDim, bias: false)
        o = try Linear(s, p + ".to_out.0", out: dim, in: inner, bias: true)
    }
    /// x [b][n][dim], ctx [b][m][kvDim] (nil: self-attention) -> [b][n][dim]
    func callAsFunction(_ x: [Float], ctx: [Float]?, b: Int, n: Int, m: Int, heads: Int, threads: Int) -> [Float] {
        let inner = q.outFeatures, hd = inner / heads
        let qa = q.apply(x, rows: b * n, threads: threads)
        let src = ctx ?? x
        let kvRows = ctx == nil ? n : m
        let ka = k.apply(src, rows: b * kvRows, threads: threads)
        let va = v.apply(src, rows: b * kvRows, threads: threads)
        var o = outputFloats(b * n * inner)
        qa.withUnsafeBufferPointer { qp in ka.withUnsafeBufferPointer { kp in va.withUnsafeBufferPointer { vp in
            o.withUnsafeMutableBufferPointer { op in
                for i in 0..<b {
                    attention(qp.baseAddress! + i * n * inner, kp.baseAddress! + i * kvRows * inner, vp.baseAddress! + i * kvRows * inner,
                              op.baseAddress! + i * n * inner, nq: n, nkv: kvRows, heads: heads, headDim: hd, threads: threads)
                }
            }
        } } }
        return self.o.apply(o, rows: b * n, threads: threads)
    }
}

struct TransformerBlock {
    let norm1w, norm1b, norm2w, norm2b, norm3w, norm3b: Tensor
    let attn1, attn2: AttentionWeights
    let ffIn, ffOut: Linear
    init(_ s: TensorStore, _ p: String, dim: Int, ctxDim: Int) throws {
        norm1w = try s.get(p + ".norm1.weight", shape: [dim]); norm1b = try s.get(p + ".norm1.bias", shape: [dim])
        norm2w = try s.get(p + ".norm2.weight", shape: [dim]); norm2b = try s.get(p + ".norm2.bias", shape: [dim])
        norm3w = try s.get(p + ".norm3.weight", shape: [dim]); norm3b = try s.get(p + ".norm3.bias", shape: [dim])
        attn1 = try AttentionWeights(s, p + ".attn1", dim: dim, kvDim: dim, inner: dim)
        attn2 = try AttentionWeights(s, p + ".attn2", dim: dim, kvDim: ctxDim, inner: dim)
        ffIn = try Linear(s, p + ".ff.net.0.proj", out: 8 * dim, in: dim, bias: true)
        ffOut = try Linear(s, p + ".ff.net.2", out: dim, in: 4 * dim, bias: true)
    }
    func callAsFunction(_ x: inout [Float], ctx: [Float], b: Int, n: Int, m: Int, dim: Int, heads: Int, threads: Int) {
        let rows = b * n
        var t = layerNorm(x, w: norm1w, b: norm1b, rows: rows, dim: dim, eps: 1e-5, threads: threads)
        addInPlace(&x, attn1(t, ctx: nil, b: b, n: n, m: n, heads: heads, threads: threads), threads: threads)
        t = layerNorm(x, w: norm2w, b: norm2b, rows: rows, dim: dim, eps: 1e-5, threads: threads)
        addInPlace(&x, attn2(t, ctx: ctx, b: b, n: n, m: m, heads: heads, threads: threads), threads: threads)
        t = layerNorm(x, w: norm3w, b: norm3b, rows: rows, dim: dim, eps: 1e-5, threads: threads)
        // GEGLU: [hidden | gate] = proj(x); hidden * gelu(gate) (exact erf GELU)
        let pr = ffIn.apply(t, rows: rows, threads: threads)
        let inner = 4 * dim
        var g = outputFloats(rows * inner)
        pr.withUnsafeBufferPointer { pp in
            g.withUnsafeMutableBufferPointer { gp in mmk_geglu(gp.baseAddress, pp.baseAddress, Int64(rows), Int64(inner), Int32(threads)) }
        }
        addInPlace(&x, ffOut.apply(g, rows: rows, threads: threads), threads: threads)
    }
}

struct Transformer2D {
    let norm: GroupNorm
    let projIn, projOut: Linear
    let blocks: [TransformerBlock]
    let heads: Int
    let dim: Int
    init(_ s: TensorStore, _ p: String, channels: Int, heads: Int, layers: Int, ctxDim: Int, groups: Int) throws {
        norm = try GroupNorm(s, p + ".norm", channels: channels, groups: groups, eps: 1e-6)
        projIn = try Linear(linearOrConv1x1: s, p + ".proj_in", out: channels, in: channels, bias: true)
        projOut = try Linear(linearOrConv1x1: s, p + ".proj_out", out: channels, in: channels, bias: true)
        blocks = try (0..<layers).map { try TransformerBlock(s, p + ".transformer_blocks.\($0)", dim: channels, ctxDim: ctxDim) }
        self.heads = heads; self.dim = channels
    }
    /// A 1x1 convolution and a Linear on tokens compute the same thing, so both proj_in forms
    /// run as Linear on the token layout.
    func callAsFunction(_ x: FMap, ctx: [Float], ctxLen: Int, threads: Int) -> FMap {
        let n = x.hw
        let t0 = toTokens(norm(x, silu: false, threads: threads), threads: threads)
        var t = projIn.apply(t0, rows: x.b * n, threads: threads)
        for blk in blocks { blk(&t, ctx: ctx, b: x.b, n: n, m: ctxLen, dim: dim, heads: heads, threads: threads) }
        t = projOut.apply(t, rows: x.b * n, threads: threads)
        var y = fromTokens(t, b: x.b, c: x.c, h: x.h, w: x.w, threads: threads)
        addInPlace(&y.d, x.d, threads: threads)
        return y
    }
}

struct UNetBlock {
    var resnets: [ResnetBlock] = []
    var attentions: [Transformer2D] = []
    var sampler: Conv2d? = nil   // downsamplers.0.conv (stride 2) or upsamplers.0.conv
}

public final class UNet: @unchecked Sendable {
    public let config: UNetConfig
    let store: TensorStore
    let timeLinear1, timeLinear2: Linear
    let convIn, convOut: Conv2d
    let normOut: GroupNorm
    var down: [UNetBlock] = []
    var mid = UNetBlock()
    var up: [UNetBlock] = []

    public convenience init(directory: String) throws {
        let files = CheckpointFiles(directory: directory)
        let cfg = try UNetConfig.parse(try files.open("config.json").json(what: directory + "/config.json"), file: directory + "/config.json")
        try self.init(config: cfg, store: try loadComponentStore(directory))
    }

    public init(config c: UNetConfig, store s: TensorStore) throws {
        config = c; store = s
        let ch = c.blockOutChannels, nb = ch.count, g = c.normNumGroups, eps = c.normEps
        let temb = ch[0] * 4
        timeLinear1 = try Linear(s, "time_embedding.linear_1", out: temb, in: ch[0], bias: true)
        timeLinear2 = try Linear(s, "time_embedding.linear_2", out: temb, in: temb, bias: true)
        convIn = try Conv2d(s, "conv_in", cin: c.inChannels, cout: ch[0], k: 3)
        var outCh = ch[0]
        for i in 0..<nb {
            let inCh = outCh; outCh = ch[i]
            var blk = UNetBlock()
            let p = "down_blocks.\(i)"
            for j in 0..<c.layersPerBlock {
                blk.resnets.append(try ResnetBlock(s, "\(p).resnets.\(j)", cin: j == 0 ? inCh : outCh, cout: outCh, temb: temb, groups: g, eps: eps))
                if c.downBlockTypes[i] == "CrossAttnDownBlock2D" {
                    blk.attentions.append(try Transformer2D(s, "\(p).attentions.\(j)", channels: outCh, heads: c.numHeads[i],
                                                            layers: c.transformerLayers[i], ctxDim: c.crossAttentionDim, groups: g))
                }
            }
            if i < nb - 1 { blk.sampler = try Conv2d(s, "\(p).downsamplers.0.conv", cin: outCh, cout: outCh, k: 3, stride: 2, pad: c.downsamplePadding) }
            down.append(blk)
        }
        let mc = ch[nb - 1]
        mid.resnets = [try ResnetBlock(s, "mid_block.resnets.0", cin: mc, cout: mc, temb: temb, groups: g, eps: eps, outScale: c.midBlockScaleFactor),
                       try ResnetBlock(s, "mid_block.resnets.1", cin: mc, cout: mc, temb: temb, groups: g, eps: eps, outScale: c.midBlockScaleFactor)]
        mid.attentions = [try Transformer2D(s, "mid_block.attentions.0", channels: mc, heads: c.numHeads[nb - 1],
                                            layers: c.transformerLayers[nb - 1], ctxDim: c.crossAttentionDim, groups: g)]
        let rch = Array(ch.reversed()), rheads = Array(c.numHeads.reversed()), rlayers = Array(c.transformerLayers.reversed())
        outCh = rch[0]
        for i in 0..<nb {
            let prevOut = outCh
            outCh = rch[i]
            let inCh = rch[min(i + 1, nb - 1)]
            var blk = UNetBlock()
            let p = "up_blocks.\(i)"
            let nl = c.layersPerBlock + 1
            for j in 0..<nl {
                let skip = j == nl - 1 ? inCh : outCh
                let rin = j == 0 ? prevOut : outCh
                blk.resnets.append(try ResnetBlock(s, "\(p).resnets.\(j)", cin: rin + skip, cout: outCh, temb: temb, groups: g, eps: eps))
                if c.upBlockTypes[i] == "CrossAttnUpBlock2D" {
                    blk.attentions.append(try Transformer2D(s, "\(p).attentions.\(j)", channels: outCh, heads: rheads[i],
                                                            layers: rlayers[i], ctxDim: c.crossAttentionDim, groups: g))
                }
            }
            if i < nb - 1 { blk.sampler = try Conv2d(s, "\(p).upsamplers.0.conv", cin: outCh, cout: outCh, k: 3) }
            up.append(blk)
        }
        normOut = try GroupNorm(s, "conv_norm_out", channels: ch[0], groups: g, eps: eps)
        convOut = try Conv2d(s, "conv_out", cin: ch[0], cout: c.outChannels, k: 3)
    }

    /// diffusers' get_timestep_embedding in float32.
    func timestepEmbedding(_ t: Float) -> [Float] {
        let dim = config.blockOutChannels[0], half = dim / 2
        var e = [Float](repeating: 0, count: dim)
        for i in 0..<half {
            let exponent = -Float(9.210340371976184) * Float(i) / (Float(half) - config.freqShift)  // log(10000)
            let a = t * expf(exponent)
            let s = sinf(a), co = cosf(a)
            if config.flipSinToCos { e[i] = co; e[half + i] = s } else { e[i] = s; e[half + i] = co }
        }
        return e
    }

    /// One evaluation: sample [b][in][h][w], one timestep for the batch, condition
    /// [b][ctxLen][cross_attention_dim] -> [b][out][h][w]. h and w must be multiples of
    /// 2^(blocks - 1).
    public func forward(sample: [Float], batch b: Int, height h: Int, width w: Int, timestep: Float,
                        context: [Float], contextLength m: Int, threads: Int) throws -> [Float] {
        let c = config
        let f = 1 << (c.blockOutChannels.count - 1)
        guard h > 0, w > 0, h % f == 0, w % f == 0 else {
            throw MMError.invalidArgument("UNet: latent size \(h)x\(w) must be a positive multiple of \(f)")
        }
        guard sample.count == b * c.inChannels * h * w else { throw MMError.invalidArgument("UNet: sample has \(sample.count) floats, expected \(b * c.inChannels * h * w)") }
        guard context.count == b * m * c.crossAttentionDim else { throw MMError.invalidArgument("UNet: context has \(context.count) floats, expected \(b) x \(m) x \(c.crossAttentionDim)") }
        // time embedding (the same t for the whole batch)
        let te = timestepEmbedding(timestep)
        var emb = timeLinear1.apply(te, rows: 1, threads: threads)
        emb.withUnsafeMutableBufferPointer { mmk_silu($0.baseAddress, Int64($0.count), 1) }
        emb = timeLinear2.apply(emb, rows: 1, threads: threads)
        emb.withUnsafeMutableBufferPointer { mmk_silu($0.baseAddress, Int64($0.count), 1) }   // resnets apply SiLU first
        var tembAct: [Float] = []
        for _ in 0..<b { tembAct += emb }

        var x = FMap(b: b, c: c.inChannels, h: h, w: w, d: sample)
        if c.centerInputSample { x.d = x.d.map { 2 * $0 - 1 } }
        x = try convIn(x, threads: threads)
        var skips: [FMap] = [x]
        for blk in down {
            for (j, r) in blk.resnets.enumerated() {
                x = try r(x, tembAct: tembAct, threads: threads)
                if j < blk.attentions.count { x = blk.attentions[j](x, ctx: context, ctxLen: m, threads: threads) }
                skips.append(x)
            }
            if let d = blk.sampler { x = try d(x, threads: threads); skips.append(x) }
        }
        x = try mid.resnets[0](x, tembAct: tembAct, threads: threads)
        x = mid.attentions[0](x, ctx: context, ctxLen: m, threads: threads)
        x = try mid.resnets[1](x, tembAct: tembAct, threads: threads)
        for blk in up {
            for (j, r) in blk.resnets.enumerated() {
                let s = skips.removeLast()
                x = concatChannels(x, s)
                x = try r(x, tembAct: tembAct, threads: threads)
                if j < blk.attentions.count { x = blk.attentions[j](x, ctx: context, ctxLen: m, threads: threads) }
            }
            if let u = blk.sampler { x = try u(upsample2x(x, threads: threads), threads: threads) }
        }
        x = try convOut(normOut(x, silu: true, threads: threads), threads: threads)
        return x.d
    }
}

func concatChannels(_ a: FMap, _ b: FMap) -> FMap {
    precondition(a.b == b.b && a.h == b.h && a.w == b.w)
    var y = FMap(b: a.b, c: a.c + b.c, h: a.h, w: a.w)
    let per = y.perImage
    y.d.withUnsafeMutableBufferPointer { d in
        a.d.withUnsafeBufferPointer { ap in
            b.d.withUnsafeBufferPointer { bp in
                for i in 0..<a.b {
                    let dst = d.baseAddress! + i * per
                    dst.update(from: ap.baseAddress! + i * a.perImage, count: a.perImage)
                    (dst + a.perImage).update(from: bp.baseAddress! + i * b.perImage, count: b.perImage)
                }
            }
        }
    }
    return y
}
