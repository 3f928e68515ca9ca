// C ABI: the visualizer (visual tokens -> pictures) and end-to-end rendering of results.
import CMetamorphABI
import MetamorphCore
import MetamorphRuntime
import MetamorphVisualizer
#if canImport(Glibc)
import Glibc
#endif

func defaultRenderParams() -> mm_render_params {
    var p = mm_render_params()
    p.struct_size = UInt32(MemoryLayout<mm_render_params>.size)
    p.steps = 0
    p.guidance = -1
    p.n_threads = 0
    p.seed = UInt64.max
    p.scheduler = nil
    p.latents = nil
    p.n_latents = 0
    p.on_progress = nil
    p.user = nil
    return p
}

@_cdecl("mm_render_params_init") public func mm_render_params_init(_ p: UnsafeMutablePointer<mm_render_params>?) {
    p?.pointee = defaultRenderParams()
}

func visualizerBox(_ p: OpaquePointer?) throws -> VisualizerBox {
    try Registry.shared.lookup(p, .visualizer, as: VisualizerBox.self, what: "visualizer")
}

@_cdecl("mm_visualizer_load")
public func mm_visualizer_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let dir = try cString(path, what: "path")
        guard out != nil else { throw MMError.invalidArgument("out is NULL") }
        let v = try Visualizer(directory: dir)
        try storeOut(out, VisualizerBox(v), .visualizer)
    }
}

@_cdecl("mm_visualizer_free") public func mm_visualizer_free(_ p: OpaquePointer?) {
    guard p != nil else { return }
    if !Registry.shared.release(p, .visualizer) { log(2, "mm_visualizer_free: not a live visualizer handle") }
}

/// Render with the host's parameters; `cancelled` lets a session's cancel stop the render too.
func render(_ vb: VisualizerBox, tokens: [Float], count: Int, dim: Int, params: UnsafePointer<mm_render_params>?,
            cancelled: (() -> Bool)? = nil) throws -> RenderedImage {
    let rp = try readStruct(params, defaults: defaultRenderParams(), what: "mm_render_params")
    let v = vb.visualizer
    guard rp.steps >= 0 else { throw MMError.invalidArgument("steps must be >= 0") }
    let steps = rp.steps > 0 ? Int(rp.steps) : v.defaultSteps
    let guidance = rp.guidance >= 0 ? rp.guidance : Float(v.defaultGuidance)
    let threads = rp.n_threads > 0 ? Int(rp.n_threads) : resolvedDefaultThreads()
    let seed = rp.seed == UInt64.max ? UInt64.random(in: 0..<(1 << 53)) : rp.seed
    let scheduler = try rp.scheduler.map { try cString($0, what: "scheduler") }
    var latents: [Float]? = nil
    if let l = rp.latents { latents = Array(UnsafeBufferPointer(start: l, count: rp.n_latents)) }
    let fn = rp.on_progress, user = rp.user
    return try vb.lock.withLock { _ in
        try v.render(visualTokens: tokens, count: count, dim: dim, steps: steps, guidance: guidance, scheduler: scheduler,
                     latents: latents, seed: seed, threads: threads) { step, total in
            if cancelled?() == true { return false }
            if let fn { return fn(Int32(step), Int32(total), user) == 0 }
            return true
        }
    }
}

@_cdecl("mm_visualizer_render")
public func mm_visualizer_render(_ vp: OpaquePointer?, _ tokens: UnsafePointer<Float>?, _ n: Int32, _ dim: Int32,
                                 _ params: UnsafePointer<mm_render_params>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let vb = try visualizerBox(vp)
        guard out != nil else { throw MMError.invalidArgument("out is NULL") }
        guard n > 0, dim > 0, let tokens else { throw MMError.invalidArgument("tokens is NULL or n_tokens/dim not positive") }
        let arr = Array(UnsafeBufferPointer(start: tokens, count: Int(n) * Int(dim)))
        let img = try render(vb, tokens: arr, count: Int(n), dim: Int(dim), params: params)
        try storeOut(out, PictureBox(img, ownedByResult: false), .picture)
    }
}

func pictureBox(_ p: OpaquePointer?) -> PictureBox? { try? Registry.shared.lookup(p, .picture, as: PictureBox.self, what: "picture") }

@_cdecl("mm_picture_width") public func mm_picture_width(_ p: OpaquePointer?) -> Int32 { Int32(pictureBox(p)?.width ?? 0) }
@_cdecl("mm_picture_height") public func mm_picture_height(_ p: OpaquePointer?) -> Int32 { Int32(pictureBox(p)?.height ?? 0) }
@_cdecl("mm_picture_stride") public func mm_picture_stride(_ p: OpaquePointer?) -> Int32 { Int32((pictureBox(p)?.width ?? 0) * 3) }
@_cdecl("mm_picture_pixels") public func mm_picture_pixels(_ p: OpaquePointer?) -> UnsafePointer<UInt8>? {
    pictureBox(p).map { UnsafePointer($0.pixels) }
}
@_cdecl("mm_picture_free") public func mm_picture_free(_ p: OpaquePointer?) {
    guard p != nil else { return }
    guard let box = pictureBox(p) else { log(2, "mm_picture_free: not a live picture handle"); return }
    if box.ownedByResult { log(2, "mm_picture_free: this picture belongs to a result; free the result instead"); return }
    Registry.shared.release(p, .picture)
}

@_cdecl("mm_result_n_pictures") public func mm_result_n_pictures(_ p: OpaquePointer?) -> Int32 {
    resultBox(p).map { Int32($0.pictures.count) } ?? -1
}
@_cdecl("mm_result_picture") public func mm_result_picture(_ p: OpaquePointer?, _ i: Int32) -> OpaquePointer? {
    guard let box = resultBox(p), i >= 0, Int(i) < box.pictures.count else { return nil }
    return box.pictures[Int(i)]
}

/// End to end: render every complete image of a result with the gen params' visualizer.
func renderPictures(_ box: ResultBox, _ c: mm_gen_params, session: Session) throws {
    guard let vptr = c.visualizer else { return }
    let vb = try visualizerBox(vptr)
    for img in box.result.images where img.complete {
        let pic = try render(vb, tokens: img.tokens, count: img.count, dim: img.dim,
                             params: c.render.map { UnsafePointer($0) }, cancelled: { session.cancelRequested() })
        box.pictures.append(Registry.shared.register(PictureBox(pic, ownedByResult: true), .picture))
    }
}
