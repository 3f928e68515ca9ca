// What MetaMorph does between the SigLIP tower and the LLM, and back (facts from
// metamorph/model/multimodal_encoder/siglip_encoder.py, multimodal_projector/builder.py and
// language_model/metamorph_llama.py; see METAMORPH.md 1 and 4):
//  - token reduction "interpolation": [N, g*g, C] -> view [N, g, g, C] -> permute [N, C, g, g]
//    -> F.interpolate(size=(t, t), mode="bilinear", align_corners=False) -> [N, t*t, C]
//    (t = int(sqrt(num_image_tokens)); skipped when g*g == num_image_tokens);
//  - normalize_vision: F.normalize(p=2, dim=-1) = x / max(||x||, 1e-12) per token;
//  - mm_projector: "linear" | "mlp<N>x_gelu" | "mlpsoftmax" | "identity";
//  - vision_head: "linear" | "mlp" | "mlp2x_gelu" | anything else (a single Linear to mm_hidden).
import MetamorphCore
import MetamorphKernels

public enum VisionTokens {
    /// Bilinear resize of a g x g grid of C-wide tokens (row-major, token = y * g + x) to t x t,
    /// exactly as torch's upsample_bilinear2d with align_corners=False and no antialias
    /// (float32 source-index arithmetic, source index clamped at 0, taps clamped at the edge).
    public static func interpolate(_ x: UnsafePointer<Float>, grid g: Int, channels c: Int, target t: Int) -> [Float] {
        var out = [Float](repeating: 0, count: t * t * c)
        if t == g {
            out.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: x, count: t * t * c) }
            return out
        }
        let scale = Float(g) / Float(t)
        func taps(_ o: Int) -> (Int, Int, Float, Float) {
            var src = scale * (Float(o) + 0.5) - 0.5
            if src < 0 { src = 0 }
            let i0 = min(Int(src), g - 1)
            let i1 = i0 < g - 1 ? i0 + 1 : i0
            let l1 = src - Float(i0)
            return (i0, i1, 1 - l1, l1)
        }
        out.withUnsafeMutableBufferPointer { op in
            for oy in 0..<t {
                let (y0, y1, hy0, hy1) = taps(oy)
                for ox in 0..<t {
                    let (x0, x1, wx0, wx1) = taps(ox)
                    let a = x + (y0 * g + x0) * c, b = x + (y0 * g + x1) * c
                    let d = x + (y1 * g + x0) * c, e = x + (y1 * g + x1) * c
                    let o = op.baseAddress! + (oy * t + ox) * c
                    for ch in 0..<c {
                        o[ch] = hy0 * (wx0 * a[ch] + wx1 * b[ch]) + hy1 * (wx0 * d[ch] + wx1 * e[ch])
                    }
                }
            }
        }
        return out
    }

    /// Rows of width `dim` divided by their L2 norm (clamped below at 1e-12), in place.
    public static func l2Normalize(_ x: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        for r in 0..<rows {
            let p = x + r * dim
            var s: Double = 0
            for i in 0..<dim { s += Double(p[i]) * Double(p[i]) }
            let n = max(Float(s.squareRoot()), 1e-12)
            for i in 0..<dim { p[i] /= n }
        }
    }

    /// MetaMorph's post-tower step on one image's features [numPatches][C]: token reduction by
    /// interpolation to numImageTokens, then optional L2 normalisation. Returns [tokens][C].
    public static func reduce(_ features: [Float], channels c: Int, numImageTokens n: Int, normalize: Bool,
                              reduction: String = "interpolation") throws -> [Float] {
        guard c > 0, features.count % c == 0 else { throw MMError.invalidArgument("features are not a multiple of \(c) wide") }
        let patches = features.count / c
        var out: [Float]
        if n == -1 {
            return [Float](repeating: 0, count: features.count)   // the reference returns zeros
        } else if n == patches {
            out = features
        } else {
            guard reduction == "interpolation" else {
                throw MMError.unsupported("image_token_reduction \"\(reduction)\" is not supported (interpolation)")
            }
            guard n > 0 else { throw MMError.unsupported("num_image_tokens \(n) is not supported (positive, or -1)") }
            let g = Int(Double(patches).squareRoot())
            guard g * g == patches else { throw MMError.invalidArgument("\(patches) patches do not form a square grid") }
            let t = Int(Double(n).squareRoot())
            guard t * t == n else {
                throw MMError.unsupported("num_image_tokens \(n) is not a square; the reference would produce \(t * t) tokens")
            }
            out = features.withUnsafeBufferPointer { interpolate($0.baseAddress!, grid: g, channels: c, target: t) }
        }
        if normalize {
            let rows = out.count / c
            out.withUnsafeMutableBufferPointer { l2Normalize($0.baseAddress!, rows: rows, dim: c) }
        }
        return out
    }
}

/// A Linear / activation sequence, the shape of MetaMorph's projector and vision head.
enum MLPStep: @unchecked Sendable {
    case linear(Linear)
    case geluErf
    case softmax
}

func runSteps(_ steps: [MLPStep], _ x: UnsafePointer<Float>, rows: Int, inWidth: Int, threads: Int) -> [Float] {
    var cur = Array(UnsafeBufferPointer(start: x, count: rows * inWidth))
    var width = inWidth
    for s in steps {
        switch s {
        case .linear(let L):
            var y = [Float](repeating: 0, count: rows * L.outFeatures)
            cur.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { L(xp.baseAddress!, $0.baseAddress!, rows: rows, threads: threads) }
            }
            cur = y
            width = L.outFeatures
        case .geluErf:
            cur.withUnsafeMutableBufferPointer { mmk_gelu_erf($0.baseAddress, Int64($0.count), Int32(threads)) }
        case .softmax:
            cur.withUnsafeMutableBufferPointer { p in
                for r in 0..<rows {
                    let row = p.baseAddress! + r * width
                    var m = -Float.infinity
                    for i in 0..<width { m = max(m, row[i]) }
                    var s: Float = 0
                    for i in 0..<width { row[i] = expf(row[i] - m); s += row[i] }
                    for i in 0..<width { row[i] /= s }
                }
            }
        }
    }
    return cur
}

/// model.mm_projector: visual tokens (mm_hidden wide) -> LLM input embeddings (hidden wide).
public struct MMProjector: @unchecked Sendable {
    public let type: String
    public let inFeatures: Int
    public let outFeatures: Int
    let steps: [MLPStep]

    public init(store: TensorStore, type: String, mmHidden: Int, hidden: Int, prefix: String = "model.mm_projector") throws {
        self.type = type
        inFeatures = mmHidden
        outFeatures = hidden
        switch type {
        case "linear":
            steps = [.linear(try Linear(store, prefix, out: hidden, in: mmHidden, bias: true))]
        case "identity":
            guard mmHidden == hidden else {
                throw MMError.format("mm_projector_type identity needs mm_hidden_size (\(mmHidden)) == hidden_size (\(hidden))")
            }
            steps = []
        case "mlpsoftmax":
            steps = [.linear(try Linear(store, prefix + ".0", out: hidden, in: mmHidden, bias: true)), .softmax,
                     .linear(try Linear(store, prefix + ".2", out: hidden, in: hidden, bias: true))]
        default:
            guard type.hasPrefix("mlp"), type.hasSuffix("x_gelu"),
                  let depth = Int(type.dropFirst(3).dropLast(6)), depth >= 1, depth <= 64 else {
                throw MMError.unsupported("mm_projector_type \"\(type)\" is not supported (linear, mlp<N>x_gelu, mlpsoftmax, identity)")
            }
            var s: [MLPStep] = [.linear(try Linear(store, prefix + ".0", out: hidden, in: mmHidden, bias: true))]
            for i in 1..<max(depth, 1) {
                s.append(.geluErf)
                s.append(.linear(try Linear(store, "\(prefix).\(2 * i)", out: hidden, in: hidden, bias: true)))
            }
            steps = s
        }
    }

    /// y[rows][hidden] for x[rows][mm_hidden].
    public func callAsFunction(_ x: UnsafePointer<Float>, rows: Int, threads: Int) -> [Float] {
        runSteps(steps, x, rows: rows, inWidth: inFeatures, threads: threads)
    }
    public func callAsFunction(_ x: [Float], threads: Int) -> [Float] {
        x.withUnsafeBufferPointer { callAsFunction($0.baseAddress!, rows: x.count / inFeatures, threads: threads) }
    }
}

/// vision_head: LLM hidden states (hidden wide) -> predicted visual tokens (mm_hidden wide).
/// Normalisation (normalize_vision) is not part of the head; apply VisionTokens.l2Normalize.
public struct VisionHead: @unchecked Sendable {
    public let type: String
    public let inFeatures: Int
    public let outFeatures: Int
    let steps: [MLPStep]

    public init(store: TensorStore, type: String?, hidden: Int, mmHidden: Int, prefix: String = "vision_head") throws {
        let t = type ?? "None"
        self.type = t
        inFeatures = hidden
        outFeatures = mmHidden
        switch t {
        case "linear":
            // The reference builds Linear(hidden, hidden) and then treats the output as a visual token.
            guard hidden == mmHidden else {
                throw MMError.format("vision_head_type linear is Linear(hidden_size, hidden_size) in the reference; it only works when hidden_size (\(hidden)) == mm_hidden_size (\(mmHidden))")
            }
            steps = [.linear(try Linear(store, prefix, out: hidden, in: hidden, bias: true))]
        case "mlp":
            steps = [.linear(try Linear(store, prefix + ".0", out: hidden, in: hidden, bias: true)), .geluErf,
                     .linear(try Linear(store, prefix + ".2", out: mmHidden, in: hidden, bias: true))]
        case "mlp2x_gelu":
            steps = [.linear(try Linear(store, prefix + ".0", out: hidden, in: hidden, bias: true)), .geluErf,
                     .linear(try Linear(store, prefix + ".2", out: hidden, in: hidden, bias: true)), .geluErf,
                     .linear(try Linear(store, prefix + ".4", out: mmHidden, in: hidden, bias: true))]
        default:
            steps = [.linear(try Linear(store, prefix, out: mmHidden, in: hidden, bias: true))]
        }
    }

    /// z[rows][mm_hidden] for hidden[rows][hidden].
    public func callAsFunction(hidden: UnsafePointer<Float>, rows: Int, threads: Int) -> [Float] {
        runSteps(steps, hidden, rows: rows, inWidth: inFeatures, threads: threads)
    }
}

/// Image features for the LLM: tower -> hidden_states[select] -> reduction -> normalisation
/// (the SigLIP-space tokens) and, through the projector, the input embeddings.
public final class VisionEncoder: @unchecked Sendable {
    public let tower: SiglipVisionTower
    public let projector: MMProjector
    public let selectLayer: Int
    public let numImageTokens: Int
    public let normalize: Bool
    public let reduction: String

    public init(tower: SiglipVisionTower, projector: MMProjector, selectLayer: Int, numImageTokens: Int,
                normalize: Bool, reduction: String = "interpolation") throws {
        guard projector.inFeatures == tower.config.hiddenSize else {
            throw MMError.format("mm_hidden_size \(projector.inFeatures) does not match the vision tower width \(tower.config.hiddenSize)")
        }
        _ = try tower.layersNeeded(selectLayer: selectLayer)
        self.tower = tower; self.projector = projector; self.selectLayer = selectLayer
        self.numImageTokens = numImageTokens; self.normalize = normalize; self.reduction = reduction
    }

    /// Tokens per image after reduction.
    public var tokensPerImage: Int { numImageTokens == -1 ? tower.config.numPatches : numImageTokens }

    /// SigLIP-space visual tokens [tokens][mm_hidden] of one preprocessed image.
    public func visualTokens(pixels: [Float], threads: Int) throws -> [Float] {
        let f = try tower.encode(pixels: pixels, selectLayer: selectLayer, threads: threads)
        return try VisionTokens.reduce(f, channels: tower.config.hiddenSize, numImageTokens: numImageTokens,
                                       normalize: normalize, reduction: reduction)
    }

    /// LLM input embeddings [tokens][hidden] of one preprocessed image.
    public func embeddings(pixels: [Float], threads: Int) throws -> [Float] {
        projector(try visualTokens(pixels: pixels, threads: threads), threads: threads)
    }
}

#if canImport(Glibc)
import Glibc
#endif
