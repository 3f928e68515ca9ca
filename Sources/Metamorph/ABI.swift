// The C ABI of include/metamorph.h. Only boundary work lives here: handle checks, struct
// reading by struct_size, input copies, error translation. The engine is MetamorphRuntime.
import CMetamorphABI
import MetamorphCore
import MetamorphRuntime
import MetamorphTokenizer
#if canImport(Glibc)
import Glibc
#endif

// MARK: helpers

/// Read a host struct that starts with `uint32_t struct_size`, honouring the size the host
/// compiled with: fields past it keep the library's defaults.
func readStruct<T>(_ p: UnsafePointer<T>?, defaults: T, what: String) throws -> T {
    guard let p else { return defaults }
    let size = Int(UnsafeRawPointer(p).load(as: UInt32.self))
    guard size >= 8 else { throw MMError(.abiMismatch, "\(what).struct_size is \(size); call the matching _init function first") }
    var out = defaults
    withUnsafeMutableBytes(of: &out) { dst in _ = memcpy(dst.baseAddress!, UnsafeRawPointer(p), min(size, MemoryLayout<T>.size)) }
    return out
}

/// Offset of the first byte that is not valid UTF-8, or nil.
func invalidUTF8Offset(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
    var i = 0
    let n = b.count
    while i < n {
        let c = b[i]
        if c < 0x80 { i += 1; continue }
        var len = 0, minCP: UInt32 = 0, cp: UInt32 = 0
        if c & 0xE0 == 0xC0 { len = 2; minCP = 0x80; cp = UInt32(c & 0x1F) }
        else if c & 0xF0 == 0xE0 { len = 3; minCP = 0x800; cp = UInt32(c & 0x0F) }
        else if c & 0xF8 == 0xF0 { len = 4; minCP = 0x10000; cp = UInt32(c & 0x07) }
        else { return i }
        if i + len > n { return i }
        for k in 1..<len {
            let cc = b[i + k]
            if cc & 0xC0 != 0x80 { return i }
            cp = (cp << 6) | UInt32(cc & 0x3F)
        }
        if cp < minCP || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000) { return i }
        i += len
    }
    return nil
}

/// Host text (length in bytes, or SIZE_MAX for NUL-terminated) as a validated Swift string.
func hostString(_ p: UnsafePointer<CChar>?, _ len: Int, what: String) throws -> String {
    guard let p else {
        if len == 0 { return "" }
        throw MMError.invalidArgument("\(what) is NULL")
    }
    let n = len == Int.max || len == -1 ? strlen(p) : len
    let buf = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: n)
    if let off = invalidUTF8Offset(buf) { throw MMError(.invalidUTF8, "\(what) is not valid UTF-8 (byte offset \(off))") }
    return String(decoding: buf, as: UTF8.self)
}

func cString(_ p: UnsafePointer<CChar>?, what: String) throws -> String {
    try hostString(p, Int.max, what: what)
}

/// Copy bytes into a caller buffer with the size-needed protocol.
func deliver(_ bytes: [UInt8], _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ needed: UnsafeMutablePointer<Int>?, nul: Bool) throws {
    needed?.pointee = bytes.count
    guard cap >= bytes.count else {
        throw MMError(.bufferTooSmall, "buffer holds \(cap) bytes, \(bytes.count) needed")
    }
    if bytes.count > 0 {
        guard let buf else { throw MMError.invalidArgument("buffer is NULL") }
        bytes.withUnsafeBytes { _ = memcpy(buf, $0.baseAddress!, bytes.count) }
    }
    if nul, let buf, cap > bytes.count { buf[bytes.count] = 0 }
}

func storeOut(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ obj: AnyObject, _ kind: HandleKind) throws {
    guard let out else { throw MMError.invalidArgument("the output handle pointer is NULL") }
    out.pointee = Registry.shared.register(obj, kind)
}

// MARK: library

private let versionString = CString("0.1.0")
private let statusNames: [CString] = [
    "MM_OK", "MM_ERR_INVALID_ARGUMENT", "MM_ERR_IO", "MM_ERR_FORMAT", "MM_ERR_UNSUPPORTED", "MM_ERR_OUT_OF_MEMORY",
    "MM_ERR_CONTEXT_FULL", "MM_ERR_CANCELLED", "MM_ERR_BUSY", "MM_ERR_BUFFER_TOO_SMALL", "MM_ERR_INVALID_UTF8",
    "MM_ERR_OUT_OF_RANGE", "MM_ERR_INTERNAL", "MM_ERR_ABI_MISMATCH",
].map(CString.init)
private let unknownStatus = CString("MM_ERR_UNKNOWN")

@_cdecl("mm_last_error") public func mm_last_error() -> UnsafePointer<CChar> { lastErrorPointer() }

@_cdecl("mm_status_name") public func mm_status_name(_ s: Int32) -> UnsafePointer<CChar> {
    s >= 0 && Int(s) < statusNames.count ? UnsafePointer(statusNames[Int(s)].ptr) : UnsafePointer(unknownStatus.ptr)
}

@_cdecl("mm_abi_version") public func mm_abi_version() -> UInt32 { UInt32(MM_ABI_VERSION) }
@_cdecl("mm_version_string") public func mm_version_string() -> UnsafePointer<CChar> { UnsafePointer(versionString.ptr) }

@_cdecl("mm_struct_size") public func mm_struct_size(_ which: Int32) -> Int {
    switch which {
    case MM_STRUCT_MODEL_PARAMS: return MemoryLayout<mm_model_params>.size
    case MM_STRUCT_SESSION_PARAMS: return MemoryLayout<mm_session_params>.size
    case MM_STRUCT_GEN_PARAMS: return MemoryLayout<mm_gen_params>.size
    case MM_STRUCT_PROMPT_PART: return MemoryLayout<mm_prompt_part>.size
    case MM_STRUCT_IMAGE: return MemoryLayout<mm_image>.size
    case MM_STRUCT_TIMINGS: return MemoryLayout<mm_timings>.size
    case MM_STRUCT_MEMORY_FILE: return MemoryLayout<mm_memory_file>.size
    case MM_STRUCT_RENDER_PARAMS: return MemoryLayout<mm_render_params>.size
    default: return 0
    }
}

@_cdecl("mm_set_log_callback")
public func mm_set_log_callback(_ fn: mm_log_fn?, _ user: UnsafeMutableRawPointer?, _ minLevel: Int32) {
    logSink.withLock { $0 = LogSink(fn: fn, user: user, minLevel: minLevel) }
}

@_cdecl("mm_set_default_threads") public func mm_set_default_threads(_ n: Int32) {
    defaultThreads.store(max(0, Int(n)), ordering: .relaxed)
}
@_cdecl("mm_get_default_threads") public func mm_get_default_threads() -> Int32 { Int32(resolvedDefaultThreads()) }

// MARK: tokenizer

func tokenizerOf(_ p: OpaquePointer?) throws -> Tokenizer {
    try Registry.shared.lookup(p, .tokenizer, as: TokenizerBox.self, what: "tokenizer").tokenizer
}

@_cdecl("mm_tokenizer_load")
public func mm_tokenizer_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        let p = try cString(path, what: "path")
        let t = try wrapTokenizer { try Tokenizer(path: p) }
        try storeOut(out, TokenizerBox(t, borrowed: false), .tokenizer)
    }
}

@_cdecl("mm_tokenizer_load_from_memory")
public func mm_tokenizer_load_from_memory(_ data: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let data else { throw MMError.invalidArgument("json is NULL") }
        let bytes = Array(UnsafeBufferPointer(start: data.assumingMemoryBound(to: UInt8.self), count: size))
        let t = try wrapTokenizer { try Tokenizer(jsonData: bytes) }
        try storeOut(out, TokenizerBox(t, borrowed: false), .tokenizer)
    }
}

@_cdecl("mm_tokenizer_free") public func mm_tokenizer_free(_ p: OpaquePointer?) {
    guard let p else { return }
    if let box = try? Registry.shared.lookup(p, .tokenizer, as: TokenizerBox.self, what: "tokenizer"), box.borrowed {
        log(2, "mm_tokenizer_free: this tokenizer belongs to a model (mm_model_tokenizer); not freed")
        return
    }
    if !Registry.shared.release(p, .tokenizer) { log(2, "mm_tokenizer_free: not a live tokenizer handle") }
}

@_cdecl("mm_tokenize")
public func mm_tokenize(_ tok: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ len: Int, _ flags: Int32,
                        _ ids: UnsafeMutablePointer<Int32>?, _ cap: Int, _ nTokens: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let t = try tokenizerOf(tok)
        guard text != nil || len == 0 else { throw MMError.invalidArgument("text is NULL") }
        let buf = UnsafeBufferPointer(start: UnsafeRawPointer(text)?.assumingMemoryBound(to: UInt8.self), count: text == nil ? 0 : len)
        if let off = invalidUTF8Offset(buf) { throw MMError(.invalidUTF8, "text is not valid UTF-8 (byte offset \(off))") }
        let s = String(decoding: buf, as: UTF8.self)
        let out = t.encode(s, addSpecialTokens: flags & MM_TOKENIZE_ADD_BOS != 0)
        nTokens?.pointee = out.count
        guard cap >= out.count else { throw MMError(.bufferTooSmall, "ids holds \(cap) tokens, \(out.count) needed") }
        if !out.isEmpty {
            guard let ids else { throw MMError.invalidArgument("ids is NULL") }
            out.withUnsafeBufferPointer { ids.update(from: $0.baseAddress!, count: out.count) }
        }
    }
}

@_cdecl("mm_detokenize")
public func mm_detokenize(_ tok: OpaquePointer?, _ ids: UnsafePointer<Int32>?, _ n: Int, _ flags: Int32,
                          _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ nBytes: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let t = try tokenizerOf(tok)
        guard ids != nil || n == 0 else { throw MMError.invalidArgument("ids is NULL") }
        let arr = n == 0 ? [] : Array(UnsafeBufferPointer(start: ids, count: n))
        let text = try wrapTokenizer { try t.decode(arr, skipSpecialTokens: flags & MM_DETOKENIZE_SKIP_SPECIAL != 0) }
        try deliver(Array(text.utf8), buf, cap, nBytes, nul: true)
    }
}

@_cdecl("mm_token_to_piece")
public func mm_token_to_piece(_ tok: OpaquePointer?, _ id: Int32, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                              _ nBytes: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        let t = try tokenizerOf(tok)
        guard let piece = t.tokenToPiece(id) else { throw MMError(.outOfRange, "token id \(id) is outside 0..<\(t.vocabSize)") }
        try deliver(piece, buf, cap, nBytes, nul: false)
    }
}

@_cdecl("mm_vocab_size") public func mm_vocab_size(_ tok: OpaquePointer?) -> Int32 {
    (try? tokenizerOf(tok)).map { Int32($0.vocabSize) } ?? -1
}

@_cdecl("mm_token_special")
public func mm_token_special(_ tok: OpaquePointer?, _ which: Int32, _ id: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let t = try tokenizerOf(tok)
        guard let id else { throw MMError.invalidArgument("id is NULL") }
        id.pointee = -1
        let found: Int32?
        switch which {
        case MM_TOKEN_BOS: found = t.bosID ?? t.tokenID("<|begin_of_text|>")
        case MM_TOKEN_EOS: found = t.tokenID("<|end_of_text|>") ?? t.tokenID("</s>")
        case MM_TOKEN_EOT: found = t.tokenID("<|eot_id|>")
        case MM_TOKEN_IMAGE_START: found = t.tokenID("<image_start>")
        case MM_TOKEN_IMAGE_END: found = t.tokenID("<image_end>")
        default: throw MMError.invalidArgument("unknown special token kind \(which)")
        }
        guard let f = found else { throw MMError(.outOfRange, "this tokenizer has no token of kind \(which)") }
        id.pointee = f
    }
}

@_cdecl("mm_token_lookup")
public func mm_token_lookup(_ tok: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ len: Int, _ id: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let t = try tokenizerOf(tok)
        let s = try hostString(text, len, what: "text")
        guard let id else { throw MMError.invalidArgument("id is NULL") }
        guard let f = t.tokenID(s) else { id.pointee = -1; throw MMError(.outOfRange, "\"\(s)\" is not a token") }
        id.pointee = f
    }
}

@_cdecl("mm_token_is_special") public func mm_token_is_special(_ tok: OpaquePointer?, _ id: Int32) -> Int32 {
    guard let t = try? tokenizerOf(tok), id >= 0, Int(id) < t.vocabSize else { return -1 }
    return t.isSpecial(id) ? 1 : 0
}
