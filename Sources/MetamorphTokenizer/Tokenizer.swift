import Foundation

/// Options for loading a tokenizer.
public struct TokenizerOptions: Sendable {
    /// MetaMorph adds `<image_start>` (128256) and `<image_end>` (128257) as special
    /// tokens to the LLaMA-3 tokenizer (metamorph `initialize_vision_tokenizer`), but
    /// the checkpoint's tokenizer.json does not list them. When true and the
    /// vocabulary is exactly the LLaMA-3 one (128256 ids) without those two tokens,
    /// they are added. Default: true.
    public var addMetaMorphImageTokens: Bool
    public init(addMetaMorphImageTokens: Bool = true) { self.addMetaMorphImageTokens = addMetaMorphImageTokens }
}

struct AddedToken {
    var id: Int32
    var content: [UInt8]
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
    var special: Bool
}

enum TemplateItem {
    case ids([Int32])
    case sequence
}

/// A Hugging Face `tokenizer.json` byte-level BPE tokenizer (LLaMA-3 family),
/// producing exactly the ids of the `tokenizers` library. Immutable after init;
/// safe to share between threads.
public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    /// Bytes each id decodes to (after the ByteLevel decoder), flattened.
    let pieceBytes: [UInt8]
    let pieceOffsets: [Int]      // count = vocabSize + 1
    let validID: [Bool]
    let specialID: [Bool]
    let addedByID: [Int32: Int]  // id -> index in addedTokens
    let addedTokens: [AddedToken]
    let addedLookup: [[UInt8]: Int32]
    let tries: [AddedTrie]       // non-normalized tokens first, then normalized
    let template: [TemplateItem]?
    let nonByteLevelTokens: [String: Int32]

    /// Number of ids, including added tokens (128258 for MetaMorph).
    public let vocabSize: Int
    /// The BOS id the post-processor adds (128000 for LLaMA-3), if any.
    public let bosID: Int32?
    /// Unicode version of the character tables used by the pre-tokenizer.
    public static let unicodeVersion = unicodeTablesVersion

    private let cacheLock = NSLock()
    private nonisolated(unsafe) var cachePool: [BPECache] = []

    /// Loads a `tokenizer.json` file, or a directory that contains one.
    public convenience init(path: String, options: TokenizerOptions = TokenizerOptions()) throws {
        var isDir: ObjCBool = false
        var file = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            file = (path as NSString).appendingPathComponent("tokenizer.json")
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            let exists = FileManager.default.fileExists(atPath: file)
            throw TokenizerError.cannotRead(path: file, reason: exists ? "unreadable" : "no such file")
        }
        try self.init(jsonData: [UInt8](data), options: options)
    }

    /// Builds a tokenizer from the bytes of a `tokenizer.json`.
    public init(jsonData: [UInt8], options: TokenizerOptions = TokenizerOptions()) throws {
        if let bad = jsonData.withUnsafeBufferPointer({ firstInvalidUTF8($0) }) {
            throw TokenizerError.invalidJSON(message: "invalid UTF-8", offset: bad)
        }
        let doc: JSONDocument
        do { doc = try JSONDocument.parse(jsonData) } catch let e as JSONParseError {
            throw TokenizerError.invalidJSON(message: e.message, offset: e.offset)
        }
        guard case .object = doc.root else {
            throw TokenizerError.wrongType(field: "(root)", expected: "an object", found: doc.root.typeName)
        }
        let b = try Builder(doc: doc, options: options)
        model = b.model
        pieceBytes = b.pieceBytes
        pieceOffsets = b.pieceOffsets
        validID = b.validID
        specialID = b.specialID
        addedTokens = b.added
        var byID: [Int32: Int] = [:]
        var lookup: [[UInt8]: Int32] = [:]
        for (i, t) in b.added.enumerated() { byID[t.id] = i; lookup[t.content] = t.id }
        addedByID = byID
        addedLookup = lookup
        tries = [AddedTrie(b.added.filter { !$0.normalized }), AddedTrie(b.added.filter { $0.normalized })].filter { !$0.isEmpty }
        template = b.template
        vocabSize = b.vocabSize
        bosID = b.bosID
        nonByteLevelTokens = b.nonByteLevel
    }

    // MARK: - Lookup

    /// Raw bytes of one token (for added tokens, their content), nil for an unknown id.
    public func tokenToPiece(_ id: Int32) -> [UInt8]? {
        guard id >= 0, Int(id) < vocabSize, validID[Int(id)] else { return nil }
        if let i = addedByID[id] { return addedTokens[i].content }
        return Array(pieceBytes[pieceOffsets[Int(id)] ..< pieceOffsets[Int(id) + 1]])
    }

    /// Id of a vocabulary or added token given its content (raw text, e.g. " the" or "<|eot_id|>").
    public func tokenID(_ content: String) -> Int32? {
        let bytes = Array(content.utf8)
        if let id = addedLookup[bytes] { return id }
        let id = model.vocab.find(bytes)
        if id >= 0 { return id }
        return nonByteLevelTokens[content]
    }

    /// True for added tokens marked special (e.g. `<|eot_id|>`, `<image_start>`).
    public func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabSize && specialID[Int(id)]
    }

    // MARK: - Encoding

    /// Encodes text. Added/special tokens written in the text are recognised, as
    /// `tokenizers` does by default. `addSpecialTokens` applies the post-processor
    /// template (BOS for LLaMA-3).
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int32] {
        var t = text
        return t.withUTF8 { encodeValid($0, addSpecialTokens: addSpecialTokens) }
    }

    /// Encodes UTF-8 bytes; throws `TokenizerError.invalidUTF8` for ill-formed input.
    public func encode(utf8 bytes: UnsafeBufferPointer<UInt8>, addSpecialTokens: Bool) throws -> [Int32] {
        if let bad = firstInvalidUTF8(bytes) { throw TokenizerError.invalidUTF8(offset: bad) }
        return encodeValid(bytes, addSpecialTokens: addSpecialTokens)
    }

    /// Convenience for byte arrays.
    public func encode(utf8 bytes: [UInt8], addSpecialTokens: Bool = false) throws -> [Int32] {
        try bytes.withUnsafeBufferPointer { try encode(utf8: $0, addSpecialTokens: addSpecialTokens) }
    }

    private func takeCache() -> BPECache {
        cacheLock.lock()
        defer { cacheLock.unlock() }
        return cachePool.popLast() ?? BPECache()
    }

    private func returnCache(_ c: BPECache) {
        cacheLock.lock()
        if cachePool.count < 8 { cachePool.append(c) }
        cacheLock.unlock()
    }

    func encodeValid(_ buf: UnsafeBufferPointer<UInt8>, addSpecialTokens: Bool) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(buf.count / 3 + 4)
        if let base = buf.baseAddress, buf.count > 0 {
            let cache = takeCache()
            var scratch = BPEScratch()
            splitAdded(base, 0, buf.count, trie: 0) { s, e, added in
                if added >= 0 {
                    out.append(added)
                } else {
                    encodePlain(base + s, e - s, &out, cache, &scratch)
                }
            }
            returnCache(cache)
        }
        guard addSpecialTokens, let template else { return out }
        var res: [Int32] = []
        res.reserveCapacity(out.count + 4)
        for item in template {
            switch item {
            case let .ids(ids): res.append(contentsOf: ids)
            case .sequence: res.append(contentsOf: out)
            }
        }
        return res
    }

    /// Splits [s, e) on added tokens of trie `t` (and recursively the later tries).
    private func splitAdded(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, trie t: Int,
                            _ emit: (Int, Int, Int32) -> Void) {
        if t >= tries.count {
            if e > s { emit(s, e, -1) }
            return
        }
        let trie = tries[t]
        var segStart = s
        var i = s
        while i < e {
            if !trie.first[Int(p[i])] { i += 1; continue }
            guard let (tok, end) = trie.longestMatch(p, i, e) else { i += 1; continue }
            let at = trie.tokens[tok]
            if at.singleWord && !singleWordOK(p, i, end, s, e) { i += 1; continue }
            var ms = i
            var me = end
            if at.lstrip {
                while ms > segStart {
                    var k = ms - 1
                    while k > segStart && p[k] & 0xC0 == 0x80 { k -= 1 }
                    if !isWhiteSpaceAt(p, k) { break }
                    ms = k
                }
            }
            if at.rstrip {
                while me < e, isWhiteSpaceAt(p, me) { me += utf8Len(p[me]) }
            }
            splitAdded(p, segStart, ms, trie: t + 1, emit)
            emit(ms, me, at.id)
            segStart = me
            i = me
        }
        splitAdded(p, segStart, e, trie: t + 1, emit)
    }

    private func singleWordOK(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int, _ lo: Int, _ hi: Int) -> Bool {
        if s > lo {
            var k = s - 1
            while k > lo && p[k] & 0xC0 == 0x80 { k -= 1 }
            if isWordCharAt(p, k) { return false }
        }
        if e < hi, isWordCharAt(p, e) { return false }
        return true
    }

    @inline(__always)
    private func encodePlain(_ p: UnsafePointer<UInt8>, _ n: Int, _ out: inout [Int32],
                             _ cache: BPECache, _ scratch: inout BPEScratch) {
        let model = self.model
        let ignoreMerges = model.ignoreMerges
        bmpClassTable.withUnsafeBufferPointer { table in
            model.byteToID.withUnsafeBufferPointer { b2i in
                var sp = Llama3Splitter(p: p, n: n, table: table.baseAddress!, pos: 0)
                while let r = sp.next() {
                    let wp = p + r.lowerBound
                    let wn = r.count
                    if wn == 1 {
                        let id = b2i[Int(wp[0])]
                        if id >= 0 { out.append(id) }
                        continue
                    }
                    let h = hashBytes(wp, wn)
                    if ignoreMerges {
                        let id = model.vocab.find(wp, wn, h)
                        if id >= 0 { out.append(id); continue }
                    }
                    if cache.lookup(wp, wn, h, into: &out) { continue }
                    let start = out.count
                    model.merge(wp, wn, into: &out, scratch: &scratch)
                    cache.store(wp, wn, h, out[start...])
                }
            }
        }
    }

    // MARK: - Decoding

    /// Decoded bytes of the ids (ByteLevel decoder), optionally without special tokens.
    public func decodeBytes(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 4)
        try pieceBytes.withUnsafeBufferPointer { pb in
            for id in ids {
                guard id >= 0, Int(id) < vocabSize, validID[Int(id)] else {
                    throw TokenizerError.idOutOfRange(id: Int(id), vocabSize: vocabSize)
                }
                if skipSpecialTokens && specialID[Int(id)] { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: pb[pieceOffsets[Int(id)] ..< pieceOffsets[Int(id) + 1]]))
            }
        }
        return out
    }

    /// Decodes ids to text. Byte sequences that are not valid UTF-8 become U+FFFD
    /// (one per maximal ill-formed subpart), as the reference's lossy conversion does.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        let bytes = try decodeBytes(ids, skipSpecialTokens: skipSpecialTokens)
        return String(decoding: bytes, as: UTF8.self)
    }

    func appendPiece(_ id: Int32, to out: inout [UInt8]) {
        out.append(contentsOf: pieceBytes[pieceOffsets[Int(id)] ..< pieceOffsets[Int(id) + 1]])
    }

    /// A decoder for generated ids that returns only complete UTF-8 characters.
    public func makeStreamingDecoder(skipSpecialTokens: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}

@inline(__always) func utf8Len(_ b: UInt8) -> Int {
    if b < 0x80 { return 1 }
    if b < 0xE0 { return 2 }
    if b < 0xF0 { return 3 }
    return 4
}

@inline(__always) func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int) -> UInt32 {
    let c = p[i]
    if c < 0x80 { return UInt32(c) }
    if c < 0xE0 { return (UInt32(c & 0x1F) << 6) | UInt32(p[i + 1] & 0x3F) }
    if c < 0xF0 { return (UInt32(c & 0x0F) << 12) | (UInt32(p[i + 1] & 0x3F) << 6) | UInt32(p[i + 2] & 0x3F) }
    return (UInt32(c & 0x07) << 18) | (UInt32(p[i + 1] & 0x3F) << 12) | (UInt32(p[i + 2] & 0x3F) << 6) | UInt32(p[i + 3] & 0x3F)
}

func isWhiteSpaceAt(_ p: UnsafePointer<UInt8>, _ i: Int) -> Bool {
    let c = charClassSlow(decodeScalar(p, i))
    return c == .space || c == .newline
}

func isWordCharAt(_ p: UnsafePointer<UInt8>, _ i: Int) -> Bool {
    let cp = decodeScalar(p, i)
    if cp == 0x5F { return true }
    let c = charClassSlow(cp)
    return c == .letter || c == .number
}

/// Byte trie over added-token contents: leftmost-longest matching.
struct AddedTrie {
    var tokens: [AddedToken]
    var first = [Bool](repeating: false, count: 256)
    var edges: [Int: Int32] = [:]   // node << 8 | byte -> child
    var terminal: [Int32] = [-1]    // node -> token index
    var isEmpty: Bool { tokens.isEmpty }

    init(_ toks: [AddedToken]) {
        tokens = toks
        for (ti, t) in toks.enumerated() where !t.content.isEmpty {
            first[Int(t.content[0])] = true
            var node = 0
            for b in t.content {
                let key = node << 8 | Int(b)
                if let c = edges[key] {
                    node = Int(c)
                } else {
                    terminal.append(-1)
                    let c = terminal.count - 1
                    edges[key] = Int32(c)
                    node = c
                }
            }
            if terminal[node] < 0 { terminal[node] = Int32(ti) }
        }
    }

    func longestMatch(_ p: UnsafePointer<UInt8>, _ i: Int, _ e: Int) -> (Int, Int)? {
        var node = 0
        var j = i
        var best: (Int, Int)? = nil
        while j < e, let c = edges[node << 8 | Int(p[j])] {
            node = Int(c)
            j += 1
            if terminal[node] >= 0 { best = (Int(terminal[node]), j) }
        }
        return best
    }
}
