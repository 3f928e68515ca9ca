// The decoder half of diffusers' AutoencoderKL:
//   z / scaling_factor -> post_quant_conv (1x1) -> conv_in -> mid block (resnet, single-head
//   attention with GroupNorm, resnet; eps 1e-6) -> UpDecoderBlock2D x n (layers_per_block + 1
//   resnets, nearest 2x + conv except the last) -> GroupNorm + SiLU -> conv_out.
#if canImport(Glibc)
import Glibc
#endif
import MetamorphCore
import MetamorphKernels
import MetamorphModels

/// The VAE mid-block attention (diffusers' Attention with group_norm, one head of all channels,
/// residual connection). Old checkpoints name the projections query/key/value/proj_attn.
struct VAEAttention {
    let norm: GroupNorm
    let q, k, v, o: Linear
    init(_ s: TensorStore, _ p: String, channels c: Int, groups: Int) throws {
        norm = try GroupNorm(s, p + ".group_norm", channels: c, groups: groups, eps: 1e-6)
        func lin(_ new: String, _ old: String) throws -> Linear {
            let name = s.has(p + ".\(new).weight") || !s.has(p + ".\(old).weight") ? new : old
            return try Linear(linearOrConv1x1: s, p + "." + name, out: c, in: c, bias: true)
        }
        q = try lin("to_q", "query"); k = try lin("to_k", "key"); v = try lin("to_v", "value"); o = try lin("to_out.0", "proj_attn")
    }
    func callAsFunction(_ x: FMap, threads: Int) -> FMap {
        let n = x.hw, c = x.c
        let t = toTokens(norm(x, silu: false, threads: threads), threads: threads)
        let qa = q.apply(t, rows: x.b * n, threads: threads)
        let ka = k.apply(t, rows: x.b * n, threads: threads)
        let va = v.apply(t, rows: x.b * n, threads: threads)
        var a = [Float](repeating: 0, count: x.b * n * c)
        qa.withUnsafeBufferPointer { qp in ka.withUnsafeBufferPointer { kp in va.withUnsafeBufferPointer { vp in
            a.withUnsafeMutableBufferPointer { ap in
                for i in 0..<x.b {
                    attention(qp.baseAddress! + i * n * c, kp.baseAddress! + i * n * c, vp.baseAddress! + i * n * c, ap.baseAddress! + i * n * c,
                              nq: n, nkv: n, heads: 1, headDim: c, threads: threads)
                }
            }
        } } }
        var y = fromTokens(o.apply(a, rows: x.b * n, threads: threads), b: x.b, c: c, h: x.h, w: x.w, threads: threads)
        addInPlace(&y.d, x.d, threads: threads)
        return y
    }
}

public final class VAEDecoder: @unchecked Sendable {
    public let config: VAEConfig
    let store: TensorStore
    let postQuant: Conv2d?
    let convIn, convOut: Conv2d
    let midRes: [ResnetBlock]
    let midAttn: VAEAttention?
    let blocks: [(resnets: [ResnetBlock], upsample: Conv2d?)]
    let normOut: GroupNorm

    public convenience init(directory: String) throws {
        let files = CheckpointFiles(directory: directory)
        let cfg = try VAEConfig.parse(try files.open("config.json").json(what: directory + "/config.json"), file: directory + "/config.json")
        try self.init(config: cfg, store: try loadComponentStore(directory))
    }

    public init(config c: VAEConfig, store s: TensorStore) throws {
        config = c; store = s
        let g = c.normNumGroups, eps: Float = 1e-6
        let rch = Array(c.blockOutChannels.reversed()), top = rch[0]
        postQuant = c.usePostQuantConv ? try Conv2d(s, "post_quant_conv", cin: c.latentChannels, cout: c.latentChannels, k: 1, pad: 0) : nil
        convIn = try Conv2d(s, "decoder.conv_in", cin: c.latentChannels, cout: top, k: 3)
        midRes = [try ResnetBlock(s, "decoder.mid_block.resnets.0", cin: top, cout: top, temb: nil, groups: g, eps: eps),
                  try ResnetBlock(s, "decoder.mid_block.resnets.1", cin: top, cout: top, temb: nil, groups: g, eps: eps)]
        midAttn = c.midBlockAddAttention ? try VAEAttention(s, "decoder.mid_block.attentions.0", channels: top, groups: g) : nil
        var bl: [(resnets: [ResnetBlock], upsample: Conv2d?)] = []
        var outCh = top
        for i in 0..<rch.count {
            let prev = outCh; outCh = rch[i]
            var rs: [ResnetBlock] = []
            for j in 0..<(c.layersPerBlock + 1) {
                rs.append(try ResnetBlock(s, "decoder.up_blocks.\(i).resnets.\(j)", cin: j == 0 ? prev : outCh, cout: outCh, temb: nil, groups: g, eps: eps))
            }
            let up = i < rch.count - 1 ? try Conv2d(s, "decoder.up_blocks.\(i).upsamplers.0.conv", cin: outCh, cout: outCh, k: 3) : nil
            bl.append((rs, up))
        }
        blocks = bl
        normOut = try GroupNorm(s, "decoder.conv_norm_out", channels: c.blockOutChannels[0], groups: g, eps: eps)
        convOut = try Conv2d(s, "decoder.conv_out", cin: c.blockOutChannels[0], cout: c.outChannels, k: 3)
    }

    /// vae.decode(z).sample for latents that are already divided by the scaling factor:
    /// z [b][latent][h][w] -> [b][out][h*f][w*f] (values around [-1, 1]).
    public func decode(_ z: [Float], batch b: Int, height h: Int, width w: Int, threads: Int) throws -> [Float] {
        guard z.count == b * config.latentChannels * h * w, h > 0, w > 0 else {
            throw MMError.invalidArgument("VAE: latents have \(z.count) floats, expected \(b) x \(config.latentChannels) x \(h) x \(w)")
        }
        var x = FMap(b: b, c: config.latentChannels, h: h, w: w, d: z)
        if let postQuant { x = try postQuant(x, threads: threads) }
        x = try convIn(x, threads: threads)
        x = try midRes[0](x, tembAct: nil, threads: threads)
        if let midAttn { x = midAttn(x, threads: threads) }
        x = try midRes[1](x, tembAct: nil, threads: threads)
        for blk in blocks {
            for r in blk.resnets { x = try r(x, tembAct: nil, threads: threads) }
            if let u = blk.upsample { x = try u(upsample2x(x, threads: threads), threads: threads) }
        }
        x = try convOut(normOut(x, silu: true, threads: threads), threads: threads)
        return x.d
    }
}
