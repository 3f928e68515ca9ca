// C ABI: models, sessions, generation, results and jobs.
import CMetamorphABI
import MetamorphCore
import MetamorphRuntime
#if canImport(Glibc)
import Glibc
#endif

func defaultModelParams() -> mm_model_params {
    var p = mm_model_params()
    p.struct_size = UInt32(MemoryLayout<mm_model_params>.size)
    p.n_threads = 0
    p.use_mmap = 1
    p.require_tokenizer = 0
    p.vision_tower_path = nil
    p.tokenizer_path = nil
    return p
}

@_cdecl("mm_model_params_init") public func mm_model_params_init(_ p: UnsafeMutablePointer<mm_model_params>?) {
    p?.pointee = defaultModelParams()
}

func loadOptions(_ params: UnsafePointer<mm_model_params>?) throws -> LoadOptions {
    let p = try readStruct(params, defaults: defaultModelParams(), what: "mm_model_params")
    var o = LoadOptions()
    o.useMmap = p.use_mmap != 0
    o.requireTokenizer = p.require_tokenizer != 0
    if let t = p.tokenizer_path { o.tokenizerPath = try cString(t, what: "tokenizer_path") }
    if let v = p.vision_tower_path { o.visionTowerPath = try cString(v, what: "vision_tower_path") }
    return o
}

func register(model: Model, out: UnsafeMutablePointer<OpaquePointer?>?) throws {
    let box = ModelBox(model)
    if let tok = model.tokenizer {
        box.tokenizerHandle = Registry.shared.register(TokenizerBox(tok, borrowed: true), .tokenizer)
    }
    guard let out else {
        if let h = box.tokenizerHandle { Registry.shared.release(h, .tokenizer) }
        throw MMError.invalidArgument("out is NULL")
    }
    out.pointee = Registry.shared.register(box, .model)
    log(1, "loaded \(model.label): \(model.modelType), \(model.config.numHiddenLayers) layers, hidden \(model.config.hiddenSize), in \(Int(model.loadMilliseconds)) ms")
}

@_cdecl("mm_model_load")
public func mm_model_load(_ path: UnsafePointer<CChar>?, _ params: UnsafePointer<mm_model_params>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let dir = try cString(path, what: "path")
        let model = try Model.load(directory: dir, options: try loadOptions(params))
        try register(model: model, out: out)
    }
}

@_cdecl("mm_model_load_from_memory")
public func mm_model_load_from_memory(_ files: UnsafePointer<mm_memory_file>?, _ n: Int, _ mode: Int32,
                                      _ params: UnsafePointer<mm_model_params>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        guard let files, n > 0 else { throw MMError.invalidArgument("no files given") }
        guard mode == MM_MEMORY_COPY || mode == MM_MEMORY_BORROW else { throw MMError.invalidArgument("memory_mode must be MM_MEMORY_COPY or MM_MEMORY_BORROW") }
        var blobs: [String: Blob] = [:]
        for i in 0..<n {
            let f = files[i]
            guard f.struct_size >= 8 else { throw MMError(.abiMismatch, "files[\(i)].struct_size is \(f.struct_size)") }
            let name = try cString(f.name, what: "files[\(i)].name")
            guard f.data != nil || f.size == 0 else { throw MMError.invalidArgument("files[\(i)].data is NULL") }
            blobs[name] = mode == MM_MEMORY_BORROW && f.data != nil ? Blob.borrow(f.data!, count: f.size) : try Blob.copy(f.data, count: f.size)
        }
        let model = try Model.load(files: CheckpointFiles(memory: blobs), options: try loadOptions(params))
        try register(model: model, out: out)
    }
}

@_cdecl("mm_model_free") public func mm_model_free(_ p: OpaquePointer?) {
    guard let p else { return }
    guard let box = try? Registry.shared.lookup(p, .model, as: ModelBox.self, what: "model") else {
        log(2, "mm_model_free: not a live model handle"); return
    }
    if box.sessions.load(ordering: .acquiring) > 0 {
        log(3, "mm_model_free: the model still has live sessions; free them first (model kept)")
        return
    }
    if let t = box.tokenizerHandle { Registry.shared.release(t, .tokenizer) }
    Registry.shared.release(p, .model)
}

func modelBox(_ p: OpaquePointer?) throws -> ModelBox { try Registry.shared.lookup(p, .model, as: ModelBox.self, what: "model") }

@_cdecl("mm_model_tokenizer") public func mm_model_tokenizer(_ p: OpaquePointer?) -> OpaquePointer? {
    (try? modelBox(p))?.tokenizerHandle
}

@_cdecl("mm_model_info") public func mm_model_info(_ p: OpaquePointer?, _ key: Int32) -> Int64 {
    guard let m = try? modelBox(p).model else { return -1 }
    let c = m.config
    switch key {
    case MM_MODEL_INFO_VOCAB_SIZE: return Int64(c.vocabSize)
    case MM_MODEL_INFO_HIDDEN_SIZE: return Int64(c.hiddenSize)
    case MM_MODEL_INFO_N_LAYERS: return Int64(c.numHiddenLayers)
    case MM_MODEL_INFO_MAX_POSITIONS: return Int64(c.maxPositionEmbeddings)
    case MM_MODEL_INFO_HAS_VISION_INPUT: return m.vision != nil ? 1 : 0
    case MM_MODEL_INFO_HAS_VISION_OUTPUT: return m.canGenerateImages ? 1 : 0
    case MM_MODEL_INFO_NUM_IMAGE_TOKENS: return Int64(c.mm?.numImageTokens ?? 0)
    case MM_MODEL_INFO_MM_HIDDEN_SIZE: return Int64(c.mm?.mmHiddenSize ?? 0)
    default: return -1
    }
}

@_cdecl("mm_model_type") public func mm_model_type(_ p: OpaquePointer?) -> UnsafePointer<CChar>? {
    (try? modelBox(p)).map { UnsafePointer($0.typeName.ptr) }
}

// MARK: sessions

func defaultSessionParams() -> mm_session_params {
    var p = mm_session_params()
    p.struct_size = UInt32(MemoryLayout<mm_session_params>.size)
    p.n_ctx = 0
    p.n_threads = 0
    return p
}
@_cdecl("mm_session_params_init") public func mm_session_params_init(_ p: UnsafeMutablePointer<mm_session_params>?) {
    p?.pointee = defaultSessionParams()
}

func sessionBox(_ p: OpaquePointer?) throws -> SessionBox { try Registry.shared.lookup(p, .session, as: SessionBox.self, what: "session") }

@_cdecl("mm_session_create")
public func mm_session_create(_ model: OpaquePointer?, _ params: UnsafePointer<mm_session_params>?,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let mb = try modelBox(model)
        let p = try readStruct(params, defaults: defaultSessionParams(), what: "mm_session_params")
        guard p.n_ctx >= 0, p.n_threads >= 0 else { throw MMError.invalidArgument("n_ctx and n_threads must be >= 0") }
        let threads = p.n_threads > 0 ? Int(p.n_threads) : resolvedDefaultThreads()
        let s = try Session(model: mb.model, contextLength: Int(p.n_ctx), threads: threads)
        guard out != nil else { throw MMError.invalidArgument("out is NULL") }
        mb.sessions.add(1, ordering: .acquiringAndReleasing)
        try storeOut(out, SessionBox(s, owner: mb), .session)
    }
}

@_cdecl("mm_session_free") public func mm_session_free(_ p: OpaquePointer?) {
    guard let p else { return }
    guard let box = try? sessionBox(p) else { log(2, "mm_session_free: not a live session handle"); return }
    if box.jobs.load(ordering: .acquiring) > 0 {
        log(3, "mm_session_free: a job still runs on this session; free the job first (session kept)")
        return
    }
    if Registry.shared.release(p, .session) { box.owner.sessions.subtract(1, ordering: .acquiringAndReleasing) }
}

@_cdecl("mm_session_reset") public func mm_session_reset(_ p: OpaquePointer?) -> Int32 {
    guarded {
        let sb = try sessionBox(p)
        guard sb.jobs.load(ordering: .acquiring) == 0 else { throw MMError(.busy, "a job is live on this session; free it first") }
        try sb.session.reset()
    }
}
@_cdecl("mm_session_n_past") public func mm_session_n_past(_ p: OpaquePointer?) -> Int64 {
    (try? sessionBox(p)).map { Int64($0.session.nPast) } ?? -1
}
@_cdecl("mm_session_set_threads") public func mm_session_set_threads(_ p: OpaquePointer?, _ n: Int32) -> Int32 {
    guarded {
        let s = try sessionBox(p).session
        guard n >= 0 else { throw MMError.invalidArgument("n_threads must be >= 0") }
        s.threads = n > 0 ? Int(n) : resolvedDefaultThreads()
    }
}
@_cdecl("mm_session_cancel") public func mm_session_cancel(_ p: OpaquePointer?) -> Int32 {
    guarded { try sessionBox(p).session.cancel() }
}

// MARK: generation

func defaultGenParams() -> mm_gen_params {
    var p = mm_gen_params()
    p.struct_size = UInt32(MemoryLayout<mm_gen_params>.size)
    p.max_tokens = 256
    p.temperature = 0
    p.top_k = 0
    p.top_p = 1
    p.min_p = 0
    p.repeat_penalty = 1
    p.repeat_last_n = 64
    p.seed = UInt64.max
    p.raw = 0
    p.keep_logits = 0
    p.assistant_prefix = nil
    p.stop_strings = nil
    p.n_stop_strings = 0
    p.on_token = nil
    p.user = nil
    p.visualizer = nil
    p.render = nil
    return p
}
@_cdecl("mm_gen_params_init") public func mm_gen_params_init(_ p: UnsafeMutablePointer<mm_gen_params>?) {
    p?.pointee = defaultGenParams()
}

/// Copy the host's prompt parts and parameters into Swift values (the host may free its
/// memory as soon as the call returns).
func readRequest(_ parts: UnsafePointer<mm_prompt_part>?, _ n: Int, _ params: UnsafePointer<mm_gen_params>?)
    throws -> ([PromptPart], GenerationParams, mm_gen_params) {
    guard let parts, n > 0 else { throw MMError.invalidArgument("the prompt has no parts") }
    var out: [PromptPart] = []
    for i in 0..<n {
        let raw = UnsafeRawPointer(parts + i)
        let size = Int(raw.load(as: UInt32.self))
        guard size >= MemoryLayout<mm_prompt_part>.size else {
            throw MMError(.abiMismatch, "parts[\(i)].struct_size is \(size), expected \(MemoryLayout<mm_prompt_part>.size)")
        }
        let p = parts[i]
        switch p.kind {
        case MM_PART_TEXT:
            out.append(.text(try hostString(p.text, p.text_len == Int.max ? Int.max : p.text_len, what: "parts[\(i)].text")))
        case MM_PART_TOKENS:
            guard p.tokens != nil || p.n_tokens == 0 else { throw MMError.invalidArgument("parts[\(i)].tokens is NULL") }
            out.append(.tokens(p.n_tokens == 0 ? [] : Array(UnsafeBufferPointer(start: p.tokens, count: p.n_tokens))))
        case MM_PART_IMAGE:
            guard let img = p.image else { throw MMError.invalidArgument("parts[\(i)].image is NULL") }
            out.append(.image(try readImage(img, what: "parts[\(i)].image")))
        default:
            throw MMError.invalidArgument("parts[\(i)].kind \(p.kind) is not a MM_PART_* value")
        }
    }
    let c = try readStruct(params, defaults: defaultGenParams(), what: "mm_gen_params")
    var g = GenerationParams()
    g.maxTokens = Int(c.max_tokens)
    g.sampling.temperature = c.temperature
    g.sampling.topK = Int(c.top_k)
    g.sampling.topP = c.top_p
    g.sampling.minP = c.min_p
    g.sampling.repeatPenalty = c.repeat_penalty
    g.sampling.repeatLastN = Int(c.repeat_last_n)
    g.seed = c.seed == UInt64.max ? nil : c.seed
    g.raw = c.raw != 0
    g.keepLogits = c.keep_logits != 0
    if let a = c.assistant_prefix { g.assistantPrefix = try cString(a, what: "assistant_prefix") }
    if c.n_stop_strings > 0 {
        guard let ss = c.stop_strings else { throw MMError.invalidArgument("stop_strings is NULL but n_stop_strings is \(c.n_stop_strings)") }
        for i in 0..<c.n_stop_strings { g.stopStrings.append(try cString(ss[i], what: "stop_strings[\(i)]")) }
    }
    return (out, g, c)
}

func readImage(_ img: UnsafePointer<mm_image>, what: String) throws -> ImageInput {
    let m = img.pointee
    guard m.struct_size >= 8 else { throw MMError(.abiMismatch, "\(what).struct_size is \(m.struct_size)") }
    guard m.width >= 1, m.height >= 1, m.width <= 8000, m.height <= 8000 else {
        throw MMError.invalidArgument("\(what) is \(m.width)x\(m.height); width and height must be 1..8000")
    }
    let ch = m.format == MM_PIXEL_RGB8 ? 3 : m.format == MM_PIXEL_RGBA8 ? 4 : 0
    guard ch > 0 else { throw MMError.invalidArgument("\(what).format \(m.format) is not MM_PIXEL_RGB8 or MM_PIXEL_RGBA8") }
    guard Int(m.stride) >= Int(m.width) * ch else { throw MMError.invalidArgument("\(what).stride \(m.stride) is less than width * \(ch)") }
    guard let px = m.pixels else { throw MMError.invalidArgument("\(what).pixels is NULL") }
    let w = Int(m.width), h = Int(m.height)
    var rgb = [UInt8](repeating: 0, count: w * h * 3)
    for y in 0..<h {
        let row = px + y * Int(m.stride)
        for x in 0..<w {
            rgb[(y * w + x) * 3] = row[x * ch]
            rgb[(y * w + x) * 3 + 1] = row[x * ch + 1]
            rgb[(y * w + x) * 3 + 2] = row[x * ch + 2]
        }
    }
    return ImageInput(width: w, height: h, rgb: rgb)
}

@_cdecl("mm_generate")
public func mm_generate(_ sp: OpaquePointer?, _ parts: UnsafePointer<mm_prompt_part>?, _ n: Int,
                        _ params: UnsafePointer<mm_gen_params>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let sb = try sessionBox(sp)
        guard out != nil else { throw MMError.invalidArgument("out is NULL") }
        guard sb.jobs.load(ordering: .acquiring) == 0 else { throw MMError(.busy, "a job is live on this session; free it first") }
        let (pp, g, c) = try readRequest(parts, n, params)
        let cb = c.on_token
        let user = c.user
        let r = try sb.session.generate(pp, params: g, onText: cb.map { fn in
            { text, token in
                var t = text
                return t.withUTF8 { b in
                    b.withMemoryRebound(to: CChar.self) { fn($0.baseAddress, b.count, token, user) == 0 }
                }
            }
        })
        let box = ResultBox(r, loadMilliseconds: sb.session.model.loadMilliseconds)
        try renderPictures(box, c, session: sb.session)
        try storeOut(out, box, .result)
    }
}

// MARK: results

func resultBox(_ p: OpaquePointer?) -> ResultBox? { try? Registry.shared.lookup(p, .result, as: ResultBox.self, what: "result") }

@_cdecl("mm_result_text") public func mm_result_text(_ p: OpaquePointer?) -> UnsafePointer<CChar>? {
    resultBox(p).map { UnsafePointer($0.text.ptr) }
}


@_cdecl("mm_result_tokens") public func mm_result_tokens(_ p: OpaquePointer?, _ n: UnsafeMutablePointer<Int>?) -> UnsafePointer<Int32>? {
    let box = resultBox(p)
    n?.pointee = box?.result.tokens.count ?? 0
    return box.map { UnsafePointer($0.tokens) }
}
@_cdecl("mm_result_prompt_tokens") public func mm_result_prompt_tokens(_ p: OpaquePointer?, _ n: UnsafeMutablePointer<Int>?) -> UnsafePointer<Int32>? {
    let box = resultBox(p)
    n?.pointee = box?.result.promptTokens.count ?? 0
    return box.map { UnsafePointer($0.promptTokens) }
}
@_cdecl("mm_result_stop_reason") public func mm_result_stop_reason(_ p: OpaquePointer?) -> Int32 {
    resultBox(p)?.result.stopReason.rawValue ?? Int32(MM_STOP_ERROR)
}
@_cdecl("mm_result_logits") public func mm_result_logits(_ p: OpaquePointer?, _ n: UnsafeMutablePointer<Int>?) -> UnsafePointer<Float>? {
    let box = resultBox(p)
    n?.pointee = box?.result.firstLogits?.count ?? 0
    return box?.logits.map { UnsafePointer($0) }
}
@_cdecl("mm_result_seed") public func mm_result_seed(_ p: OpaquePointer?) -> UInt64 { resultBox(p)?.result.seed ?? 0 }

@_cdecl("mm_result_timings") public func mm_result_timings(_ p: OpaquePointer?, _ out: UnsafeMutablePointer<mm_timings>?) -> Int32 {
    guarded {
        guard let box = resultBox(p) else { throw MMError.invalidArgument("result is not a live handle") }
        guard let out else { throw MMError.invalidArgument("out is NULL") }
        let size = Int(out.pointee.struct_size)
        guard size >= 8 else { throw MMError(.abiMismatch, "mm_timings.struct_size is \(size); set it to sizeof(mm_timings)") }
        var t = mm_timings()
        t.struct_size = out.pointee.struct_size
        let r = box.result.timings
        t.n_prompt_tokens = Int32(r.promptTokens)
        t.n_generated = Int32(r.generated)
        t.load_ms = box.loadMilliseconds
        t.prompt_ms = r.promptMilliseconds
        t.generate_ms = r.generateMilliseconds
        withUnsafeBytes(of: &t) { _ = memcpy(UnsafeMutableRawPointer(out), $0.baseAddress!, min(size, MemoryLayout<mm_timings>.size)) }
    }
}

@_cdecl("mm_result_n_images") public func mm_result_n_images(_ p: OpaquePointer?) -> Int32 {
    resultBox(p).map { Int32($0.result.images.count) } ?? -1
}

@_cdecl("mm_result_image_tokens")
public func mm_result_image_tokens(_ p: OpaquePointer?, _ index: Int32, _ buf: UnsafeMutablePointer<Float>?, _ cap: Int,
                                   _ nTokens: UnsafeMutablePointer<Int32>?, _ dim: UnsafeMutablePointer<Int32>?,
                                   _ complete: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let box = resultBox(p) else { throw MMError.invalidArgument("result is not a live handle") }
        let images = box.result.images
        guard index >= 0, Int(index) < images.count else {
            throw MMError(.outOfRange, "image index \(index) is out of range: this result has \(images.count) images")
        }
        let img = images[Int(index)]
        nTokens?.pointee = Int32(img.count)
        dim?.pointee = Int32(img.dim)
        complete?.pointee = img.complete ? 1 : 0
        guard cap >= img.tokens.count else {
            throw MMError(.bufferTooSmall, "buffer holds \(cap) floats, \(img.tokens.count) needed")
        }
        if !img.tokens.isEmpty {
            guard let buf else { throw MMError.invalidArgument("buf is NULL") }
            img.tokens.withUnsafeBufferPointer { buf.update(from: $0.baseAddress!, count: img.tokens.count) }
        }
    }
}

@_cdecl("mm_result_free") public func mm_result_free(_ p: OpaquePointer?) {
    guard p != nil else { return }
    if !Registry.shared.release(p, .result) { log(2, "mm_result_free: not a live result handle") }
}

// MARK: jobs

func jobBox(_ p: OpaquePointer?) throws -> JobBox { try Registry.shared.lookup(p, .job, as: JobBox.self, what: "job") }

@_cdecl("mm_job_start")
public func mm_job_start(_ sp: OpaquePointer?, _ parts: UnsafePointer<mm_prompt_part>?, _ n: Int,
                         _ params: UnsafePointer<mm_gen_params>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let sb = try sessionBox(sp)
        guard out != nil else { throw MMError.invalidArgument("out is NULL") }
        let (pp, g, _) = try readRequest(parts, n, params)
        guard sb.jobs.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged else {
            throw MMError(.busy, "a job already runs on this session")
        }
        let job = GenerationJob(session: sb.session, parts: pp, params: g)
        do { try job.start() } catch { sb.jobs.store(0, ordering: .releasing); throw error }
        try storeOut(out, JobBox(job, owner: sb), .job)
    }
}

@_cdecl("mm_job_poll")
public func mm_job_poll(_ jp: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ nBytes: UnsafeMutablePointer<Int>?) -> Int32 {
    nBytes?.pointee = 0
    guard let jb = try? jobBox(jp) else { setLastError("job is not a live handle"); return Int32(MM_STOP_ERROR) }
    let (bytes, stop) = jb.job.poll(capacity: buf == nil ? 0 : cap)
    if !bytes.isEmpty, let buf { bytes.withUnsafeBytes { _ = memcpy(buf, $0.baseAddress!, bytes.count) } }
    nBytes?.pointee = bytes.count
    return stop.rawValue
}

@_cdecl("mm_job_cancel") public func mm_job_cancel(_ jp: OpaquePointer?) -> Int32 {
    guarded { try jobBox(jp).job.cancel() }
}

@_cdecl("mm_job_wait") public func mm_job_wait(_ jp: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        out?.pointee = nil
        let jb = try jobBox(jp)
        guard jb.waited.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            throw MMError.invalidArgument("mm_job_wait was already called on this job")
        }
        let r = try jb.job.wait()
        if let out { out.pointee = Registry.shared.register(ResultBox(r, loadMilliseconds: jb.owner.session.model.loadMilliseconds), .result) }
    }
}

@_cdecl("mm_job_free") public func mm_job_free(_ jp: OpaquePointer?) {
    guard jp != nil else { return }
    guard let jb = try? jobBox(jp) else { log(2, "mm_job_free: not a live job handle"); return }
    jb.job.cancel()
    _ = try? jb.job.wait()
    if Registry.shared.release(jp, .job) { jb.owner.jobs.store(0, ordering: .releasing) }
}
