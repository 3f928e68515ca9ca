// Building blocks shared by the UNet and the VAE decoder: feature maps (float32 NCHW, a batch of
// images back to back), convolutions, group norms, ResnetBlock2D, attention helpers.
// Hot loops are MetamorphKernels calls; these types only hold weights and shapes.
import MetamorphCore
import MetamorphKernels
import MetamorphModels

/// A batch of float32 NCHW feature maps.
struct FMap {
    var b: Int, c: Int, h: Int, w: Int
    var d: [Float]
    /// Contents unspecified: every producer (convolution, norm, copy) overwrites all of it.
    init(b: Int, c: Int, h: Int, w: Int) { self.b = b; self.c = c; self.h = h; self.w = w; d = outputFloats(b * c * h * w) }
    init(b: Int, c: Int, h: Int, w: Int, d: [Float]) { self.b = b; self.c = c; self.h = h; self.w = w; self.d = d }
    var hw: Int { h * w }
    var perImage: Int { c * h * w }
}

/// n floats for a kernel to overwrite entirely. Skipping the zero fill of every op's output
/// measured ~1.4% of a UNet evaluation (memset of arrays the kernels then write in full).
func outputFloats(_ n: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: n) { _, count in count = n }
}

/// Weight files of one diffusers component (diffusion_pytorch_model.safetensors or sharded).
func loadComponentStore(_ dir: String) throws -> TensorStore {
    let files = CheckpointFiles(directory: dir)
    let store = TensorStore(label: dir)
    if files.exists("diffusion_pytorch_model.safetensors") {
        try store.add(file: try files.open("diffusion_pytorch_model.safetensors"), name: "diffusion_pytorch_model.safetensors")
    } else if files.exists("model.safetensors") {
        try store.add(file: try files.open("model.safetensors"), name: "model.safetensors")
    } else if files.exists("diffusion_pytorch_model.safetensors.index.json") {
        let idx = try files.open("diffusion_pytorch_model.safetensors.index.json").json(what: "diffusion_pytorch_model.safetensors.index.json")
        guard case .object(let map, let keys)? = idx["weight_map"] else { throw MMError.format("\(dir): index without weight_map") }
        var seen: [String] = []
        for k in keys { if let f = map[k]?.string, !seen.contains(f) { seen.append(f) } }
        for f in seen { try store.add(file: try files.open(f), name: f) }
    } else {
        throw MMError.io("\(dir): no diffusion_pytorch_model.safetensors")
    }
    return store
}

func floats(_ s: TensorStore, _ name: String, _ n: Int) throws -> [Float] { try s.get(name, shape: [n]).toFloat() }

/// Calls body with a pointer to the array's storage, or nil for a nil array.
func withOptionalFloats<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}

struct Conv2d: @unchecked Sendable {
    let weight: Tensor
    let bias: [Float]?
    let cin, cout, k, stride, pad: Int
    init(_ s: TensorStore, _ p: String, cin: Int, cout: Int, k: Int, stride: Int = 1, pad: Int? = nil, bias: Bool = true) throws {
        weight = try s.get(p + ".weight", shape: [cout, cin, k, k])
        self.bias = bias ? try floats(s, p + ".bias", cout) : nil
        self.cin = cin; self.cout = cout; self.k = k; self.stride = stride; self.pad = pad ?? k / 2
    }
    func callAsFunction(_ x: FMap, threads: Int) throws -> FMap {
        precondition(x.c == cin)
        let oh = (x.h + 2 * pad - k) / stride + 1, ow = (x.w + 2 * pad - k) / stride + 1
        var y = FMap(b: x.b, c: cout, h: oh, w: ow)
        var rc: Int32 = 0
        // The whole batch in one call (the guidance pair): Winograd then transforms the weights
        // once and runs longer GEMMs; other convolutions loop over the images inside.
        x.d.withUnsafeBufferPointer { src in
            y.d.withUnsafeMutableBufferPointer { dst in
                rc = withOptionalFloats(bias) { b in
                    mmk_conv2d_batch(weight.dtype.kernelCode, weight.data, b, src.baseAddress, dst.baseAddress, Int32(x.b),
                                     Int32(cin), Int32(x.h), Int32(x.w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad),
                                     Int32(threads))
                }
            }
        }
        if rc != 0 { throw MMError(rc == -3 ? .outOfMemory : .internalError, "conv2d \(weight.name) failed (\(rc))") }
        return y
    }
}

struct GroupNorm {
    let gamma, beta: [Float]
    let groups: Int
    let eps: Float
    init(_ s: TensorStore, _ p: String, channels: Int, groups: Int, eps: Float) throws {
        gamma = try floats(s, p + ".weight", channels)
        beta = try floats(s, p + ".bias", channels)
        self.groups = groups; self.eps = eps
    }
    func callAsFunction(_ x: FMap, silu: Bool, threads: Int) -> FMap {
        var y = FMap(b: x.b, c: x.c, h: x.h, w: x.w)
        x.d.withUnsafeBufferPointer { src in
            y.d.withUnsafeMutableBufferPointer { dst in
                gamma.withUnsafeBufferPointer { g in
                    beta.withUnsafeBufferPointer { bt in
                        for i in 0..<x.b {
                            mmk_groupnorm(dst.baseAddress! + i * x.perImage, src.baseAddress! + i * x.perImage, g.baseAddress, bt.baseAddress,
                                          Int32(x.c), Int64(x.hw), Int32(groups), eps, silu ? 1 : 0, Int32(threads))
                        }
                    }
                }
            }
        }
        return y
    }
}

/// y += x elementwise.
func addInPlace(_ y: inout [Float], _ x: [Float], threads: Int) {
    precondition(y.count == x.count)
    y.withUnsafeMutableBufferPointer { yp in x.withUnsafeBufferPointer { xp in mmk_add(yp.baseAddress, xp.baseAddress, Int64(x.count), Int32(threads)) } }
}

/// NCHW batch -> tokens [b][hw][c].
func toTokens(_ x: FMap, threads: Int) -> [Float] {
    var t = outputFloats(x.d.count)
    x.d.withUnsafeBufferPointer { s in
        t.withUnsafeMutableBufferPointer { d in
            for i in 0..<x.b { mmk_transpose(d.baseAddress! + i * x.perImage, s.baseAddress! + i * x.perImage, Int64(x.c), Int64(x.hw), Int32(threads)) }
        }
    }
    return t
}

/// tokens [b][hw][c] -> NCHW batch.
func fromTokens(_ t: [Float], b: Int, c: Int, h: Int, w: Int, threads: Int) -> FMap {
    var y = FMap(b: b, c: c, h: h, w: w)
    t.withUnsafeBufferPointer { s in
        y.d.withUnsafeMutableBufferPointer { d in
            for i in 0..<b { mmk_transpose(d.baseAddress! + i * c * h * w, s.baseAddress! + i * c * h * w, Int64(h * w), Int64(c), Int32(threads)) }
        }
    }
    return y
}

extension Linear {
    /// A Linear over [rows][in] float arrays.
    func apply(_ x: [Float], rows: Int, threads: Int) -> [Float] {
        var y = outputFloats(rows * outFeatures)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in self(xp.baseAddress!, yp.baseAddress!, rows: rows, threads: threads) } }
        return y
    }
    /// A Linear stored as a 1x1 convolution [out][in][1][1] or as a matrix [out][in].
    init(linearOrConv1x1 s: TensorStore, _ p: String, out: Int, in inF: Int, bias: Bool) throws {
        let w: Tensor
        if let t = s.tensors[p + ".weight"], t.shape == [out, inF, 1, 1] {
            w = Tensor(name: t.name, dtype: t.dtype, shape: [out, inF], data: t.data)
        } else {
            w = try s.get(p + ".weight", shape: [out, inF])
        }
        self.init(weight: w, bias: bias ? try floats(s, p + ".bias", out) : nil)
    }
}

/// Multi-head attention: q [nq][heads*hd], k/v [nkv][heads*hd] -> [nq][heads*hd], one image.
func attention(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
               nq: Int, nkv: Int, heads: Int, headDim: Int, threads: Int) {
    let w = heads * headDim
    mmk_attention_tiled(out, q, k, v, Int64(nq), Int64(nkv), Int32(heads), Int32(headDim), Int64(w), Int64(w), Int64(w),
                       1 / Float(headDim).squareRoot(), Int32(threads))
}

func layerNorm(_ x: [Float], w: Tensor, b: Tensor?, rows: Int, dim: Int, eps: Float, threads: Int) -> [Float] {
    var y = outputFloats(x.count)
    x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in
            mmk_layernorm(yp.baseAddress, xp.baseAddress, w.dtype.kernelCode, w.data, b?.data, Int64(rows), Int64(dim), eps, Int32(threads))
        }
    }
    return y
}

/// diffusers' ResnetBlock2D (time_embedding_norm "default", non-linearity SiLU).
struct ResnetBlock {
    let norm1, norm2: GroupNorm
    let conv1, conv2: Conv2d
    let timeProj: Linear?
    let shortcut: Conv2d?
    let outScale: Float

    init(_ s: TensorStore, _ p: String, cin: Int, cout: Int, temb: Int?, groups: Int, eps: Float, outScale: Float = 1) throws {
        norm1 = try GroupNorm(s, p + ".norm1", channels: cin, groups: groups, eps: eps)
        conv1 = try Conv2d(s, p + ".conv1", cin: cin, cout: cout, k: 3)
        timeProj = try temb.map { try Linear(s, p + ".time_emb_proj", out: cout, in: $0, bias: true) }
        norm2 = try GroupNorm(s, p + ".norm2", channels: cout, groups: groups, eps: eps)
        conv2 = try Conv2d(s, p + ".conv2", cin: cout, cout: cout, k: 3)
        shortcut = cin != cout ? try Conv2d(s, p + ".conv_shortcut", cin: cin, cout: cout, k: 1, pad: 0) : nil
        self.outScale = outScale
    }

    /// tembAct: silu(time embedding) [b][temb], or nil for the VAE.
    func callAsFunction(_ x: FMap, tembAct: [Float]?, threads: Int) throws -> FMap {
        var h = try conv1(norm1(x, silu: true, threads: threads), threads: threads)
        if let timeProj, let tembAct {
            let t = timeProj.apply(tembAct, rows: x.b, threads: threads)
            let hw = h.hw, c = h.c
            h.d.withUnsafeMutableBufferPointer { hp in
                for i in 0..<h.b { for ch in 0..<c {
                    let v = t[i * c + ch]
                    let base = hp.baseAddress! + (i * c + ch) * hw
                    for j in 0..<hw { base[j] += v }
                } }
            }
        }
        h = try conv2(norm2(h, silu: true, threads: threads), threads: threads)
        let res = try shortcut.map { try $0(x, threads: threads) } ?? x
        addInPlace(&h.d, res.d, threads: threads)
        if outScale != 1 {
            let inv = outScale
            h.d.withUnsafeMutableBufferPointer { p in for j in 0..<p.count { p[j] /= inv } }
        }
        return h
    }
}

func upsample2x(_ x: FMap, threads: Int) -> FMap {
    var y = FMap(b: x.b, c: x.c, h: 2 * x.h, w: 2 * x.w)
    x.d.withUnsafeBufferPointer { s in
        y.d.withUnsafeMutableBufferPointer { d in
            for i in 0..<x.b {
                mmk_upsample_nearest2x(d.baseAddress! + i * 4 * x.perImage, s.baseAddress! + i * x.perImage, Int32(x.c), Int32(x.h), Int32(x.w), Int32(threads))
            }
        }
    }
    return y
}
