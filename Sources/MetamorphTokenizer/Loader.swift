// Builds the tokenizer's tables from a parsed tokenizer.json, component by
// component, dispatching on each component's `type`.

/// GPT-2 byte-level alphabet: byte -> code point.
let byteLevelChars: [UInt32] = {
    var t = [UInt32](repeating: 0, count: 256)
    var extra: UInt32 = 0
    for b in 0 ..< 256 {
        if (0x21 ... 0x7E).contains(b) || (0xA1 ... 0xAC).contains(b) || (0xAE ... 0xFF).contains(b) {
            t[b] = UInt32(b)
        } else {
            t[b] = 256 + extra
            extra += 1
        }
    }
    return t
}()

/// Code point -> byte for the byte-level alphabet (-1 when not in it).
let byteLevelInverse: [Int16] = {
    var t = [Int16](repeating: -1, count: 324)
    for (b, c) in byteLevelChars.enumerated() { t[Int(c)] = Int16(b) }
    return t
}()

/// Appends the raw bytes a byte-level token string stands for. Returns false
/// (leaving `out` unchanged) when a character is outside the alphabet.
func appendByteLevelDecoded(_ s: ArraySlice<UInt8>, to out: inout [UInt8]) -> Bool {
    let start = out.count
    let inv = byteLevelInverse
    var i = s.startIndex
    while i < s.endIndex {
        let c = s[i]
        var cp: UInt32
        var l: Int
        if c < 0x80 { cp = UInt32(c); l = 1 }
        else if c < 0xE0, i + 1 < s.endIndex { cp = UInt32(c & 0x1F) << 6 | UInt32(s[i + 1] & 0x3F); l = 2 }
        else { out.removeLast(out.count - start); return false }
        if cp >= 324 || inv[Int(cp)] < 0 { out.removeLast(out.count - start); return false }
        out.append(UInt8(inv[Int(cp)]))
        i += l
    }
    return true
}

struct Builder {
    let doc: JSONDocument
    var model: BPEModel! = nil
    var pieceBytes: [UInt8] = []
    var pieceOffsets: [Int] = []
    var validID: [Bool] = []
    var specialID: [Bool] = []
    var added: [AddedToken] = []
    var template: [TemplateItem]? = nil
    var vocabSize = 0
    var bosID: Int32? = nil
    var nonByteLevel: [String: Int32] = [:]

    init(doc: JSONDocument, options: TokenizerOptions) throws {
        self.doc = doc
        let root = doc.root
        try checkNormalizer(doc.member(root, "normalizer"))
        try checkPreTokenizer(doc.member(root, "pre_tokenizer"))
        guard let m = doc.member(root, "model"), !m.isNull else { throw TokenizerError.missingField("model") }
        let names = try buildModel(m)
        try buildAdded(doc.member(root, "added_tokens"), names: names, options: options)
        try buildPostProcessor(doc.member(root, "post_processor"))
        try checkDecoder(doc.member(root, "decoder"))
    }

    func str(_ v: JSONValue?, _ field: String) throws -> String {
        guard let v else { throw TokenizerError.missingField(field) }
        guard let s = doc.string(v) else { throw TokenizerError.wrongType(field: field, expected: "a string", found: v.typeName) }
        return s
    }

    func typeOf(_ v: JSONValue, _ component: String) throws -> String {
        guard case .object = v else { throw TokenizerError.wrongType(field: component, expected: "an object", found: v.typeName) }
        return try str(doc.member(v, "type"), "\(component).type")
    }

    func flag(_ v: JSONValue, _ name: StaticString, default d: Bool) -> Bool {
        doc.member(v, name)?.bool ?? d
    }

    // MARK: normalizer / pre-tokenizer / decoder

    func checkNormalizer(_ v: JSONValue?) throws {
        guard let v, !v.isNull else { return }
        let t = try typeOf(v, "normalizer")
        if t == "Sequence", let list = doc.member(v, "normalizers")?.array, list.isEmpty { return }
        throw TokenizerError.unknownType(component: "normalizer", type: t)
    }

    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    func checkPreTokenizer(_ v: JSONValue?) throws {
        guard let v, !v.isNull else {
            throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "null (expected the LLaMA-3 Split + ByteLevel)")
        }
        var parts: [JSONValue] = []
        func flatten(_ x: JSONValue) throws {
            let t = try typeOf(x, "pre_tokenizer")
            if t == "Sequence" {
                guard let list = doc.member(x, "pretokenizers")?.array else { throw TokenizerError.missingField("pre_tokenizer.pretokenizers") }
                for y in list { try flatten(y) }
            } else if t == "Split" || t == "ByteLevel" {
                parts.append(x)
            } else {
                throw TokenizerError.unknownType(component: "pre_tokenizer", type: t)
            }
        }
        try flatten(v)
        var sawSplit = false, sawByteLevel = false
        for x in parts {
            let t = try typeOf(x, "pre_tokenizer")
            if t == "Split" {
                guard !sawSplit, !sawByteLevel else {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "Split must come once, before ByteLevel")
                }
                guard let pat = doc.member(x, "pattern") else { throw TokenizerError.missingField("pre_tokenizer.pattern") }
                guard let re = doc.member(pat, "Regex") else {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "Split with a String pattern")
                }
                let s = try str(re, "pre_tokenizer.pattern.Regex")
                guard s == Builder.llama3Pattern else {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "Split pattern \(s) (only the LLaMA-3 pattern is implemented)")
                }
                let behavior = try str(doc.member(x, "behavior"), "pre_tokenizer.behavior")
                guard behavior == "Isolated" else {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "Split behavior \(behavior)")
                }
                if flag(x, "invert", default: false) {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "Split invert=true")
                }
                sawSplit = true
            } else {
                if flag(x, "add_prefix_space", default: true) {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "ByteLevel add_prefix_space=true")
                }
                if flag(x, "use_regex", default: true) {
                    throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "ByteLevel use_regex=true (GPT-2 split)")
                }
                sawByteLevel = true
            }
        }
        guard sawSplit, sawByteLevel else {
            throw TokenizerError.unsupported(component: "pre_tokenizer", detail: "expected Sequence[Split(LLaMA-3 pattern), ByteLevel]")
        }
    }

    func checkDecoder(_ v: JSONValue?) throws {
        guard let v, !v.isNull else {
            throw TokenizerError.unsupported(component: "decoder", detail: "null (expected ByteLevel)")
        }
        let t = try typeOf(v, "decoder")
        if t == "ByteLevel" { return }
        if t == "Sequence" {
            guard let list = doc.member(v, "decoders")?.array else { throw TokenizerError.missingField("decoder.decoders") }
            guard list.count == 1 else { throw TokenizerError.unsupported(component: "decoder", detail: "Sequence of \(list.count) decoders") }
            try checkDecoder(list[0])
            return
        }
        throw TokenizerError.unknownType(component: "decoder", type: t)
    }

    // MARK: model

    /// Returns the vocabulary entry index of every id (-1 for holes), for names in messages.
    mutating func buildModel(_ m: JSONValue) throws -> ([Int32], [JSONMember]) {
        let t = try typeOf(m, "model")
        guard t == "BPE" else { throw TokenizerError.unknownType(component: "model", type: t) }
        if let d = doc.member(m, "dropout"), !d.isNull, d.double != 0 {
            throw TokenizerError.unsupported(component: "model", detail: "BPE dropout")
        }
        for f: StaticString in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let d = doc.member(m, f), !d.isNull, doc.string(d) != "" {
                throw TokenizerError.unsupported(component: "model", detail: "BPE \(f)")
            }
        }
        let ignoreMerges = flag(m, "ignore_merges", default: false)
        guard let vocabV = doc.member(m, "vocab") else { throw TokenizerError.missingField("model.vocab") }
        guard case let .object(entries) = vocabV else {
            throw TokenizerError.wrongType(field: "model.vocab", expected: "an object", found: vocabV.typeName)
        }
        let vocab = BytesMap(capacity: entries.count)
        var pieces: [[UInt8]?] = []
        var nameIdx: [Int32] = []   // id -> entry index
        var raw: [UInt8] = []
        raw.reserveCapacity(64)
        for (k, e) in entries.enumerated() {
            let keyBytes = doc.heap[e.keyOffset ..< e.keyOffset + e.keyCount]
            guard let id = e.value.int else {
                throw TokenizerError.wrongType(field: "model.vocab[\"\(doc.key(e))\"]", expected: "an integer id", found: e.value.typeName)
            }
            guard id >= 0, id < 1 << 24 else { throw TokenizerError.invalidID(token: doc.key(e), id: id) }
            if id >= pieces.count {
                pieces.append(contentsOf: repeatElement(nil, count: id + 1 - pieces.count))
                nameIdx.append(contentsOf: repeatElement(-1, count: id + 1 - nameIdx.count))
            }
            if nameIdx[id] >= 0 {
                let other = entries[Int(nameIdx[id])]
                if !doc.keyEquals2(other, e) {
                    throw TokenizerError.duplicateID(id: id, first: doc.key(other), second: doc.key(e))
                }
            }
            nameIdx[id] = Int32(k)
            raw.removeAll(keepingCapacity: true)
            if appendByteLevelDecoded(keyBytes, to: &raw) {
                vocab.insert(raw, UInt32(id))
                pieces[id] = raw
            } else {
                nonByteLevel[doc.key(e)] = Int32(id)
                pieces[id] = Array(keyBytes)
            }
        }
        vocab.freeze()

        var byteToID = [Int32](repeating: -1, count: 256)
        for b in 0 ..< 256 { byteToID[b] = vocab.find([UInt8(b)]) }
        let hasUnk = !(doc.member(m, "unk_token")?.isNull ?? true)
        if (hasUnk || flag(m, "byte_fallback", default: false)) && byteToID.contains(-1) {
            throw TokenizerError.unsupported(component: "model", detail: "unk_token/byte_fallback with bytes missing from the vocabulary")
        }

        // Merges.
        let mergeList: [JSONValue]
        if let mv = doc.member(m, "merges") {
            guard let a = mv.array else { throw TokenizerError.wrongType(field: "model.merges", expected: "an array", found: mv.typeName) }
            mergeList = a
        } else {
            mergeList = []
        }
        let merges = MergeMap(capacity: mergeList.count)
        var buf: [UInt8] = []
        buf.reserveCapacity(128)
        var concat: [UInt8] = []
        func lookup(_ s: ArraySlice<UInt8>, rank: Int) throws -> Int32 {
            buf.removeAll(keepingCapacity: true)
            if appendByteLevelDecoded(s, to: &buf) {
                let id = vocab.find(buf)
                if id >= 0 { return id }
            } else if let id = nonByteLevel[String(decoding: s, as: UTF8.self)] {
                return id
            }
            throw TokenizerError.mergeUnknownToken(rank: rank, token: String(decoding: s, as: UTF8.self))
        }
        for (rank, mv) in mergeList.enumerated() {
            let a: ArraySlice<UInt8>, b: ArraySlice<UInt8>
            switch mv {
            case let .string(o, n):
                let s = doc.heap[o ..< o + n]
                guard let sp = s.firstIndex(of: 0x20), s[(sp + 1)...].firstIndex(of: 0x20) == nil else {
                    throw TokenizerError.malformedMerge(rank: rank, entry: "\"\(String(decoding: s, as: UTF8.self))\" is not \"a b\"")
                }
                a = s[..<sp]
                b = s[(sp + 1)...]
            case let .array(parts):
                guard parts.count == 2, let x = doc.bytes(parts[0]), let y = doc.bytes(parts[1]) else {
                    throw TokenizerError.malformedMerge(rank: rank, entry: "expected a pair of strings")
                }
                a = x
                b = y
            default:
                throw TokenizerError.malformedMerge(rank: rank, entry: "expected a string or a pair, found \(mv.typeName)")
            }
            let ia = try lookup(a, rank: rank)
            let ib = try lookup(b, rank: rank)
            concat.removeAll(keepingCapacity: true)
            concat.append(contentsOf: a)
            concat.append(contentsOf: b)
            let merged: Int32
            do { merged = try lookup(concat[...], rank: rank) } catch {
                throw TokenizerError.mergeUnknownToken(rank: rank, token: String(decoding: concat, as: UTF8.self))
            }
            merges.insert(MergeMap.key(UInt32(ia), UInt32(ib)), rank: UInt32(rank), id: UInt32(merged))
        }
        model = BPEModel(vocab: vocab, merges: merges, byteToID: byteToID, ignoreMerges: ignoreMerges)
        modelPieces = pieces
        return (nameIdx, entries)
    }

    var modelPieces: [[UInt8]?] = []

    // MARK: added tokens

    mutating func buildAdded(_ v: JSONValue?, names vocabNames: ([Int32], [JSONMember]), options: TokenizerOptions) throws {
        var pieces = modelPieces
        var names: [Int: String] = [:]   // added tokens
        let doc = self.doc
        func vocabName(_ id: Int) -> String? {
            guard id < vocabNames.0.count, vocabNames.0[id] >= 0 else { return nil }
            return doc.key(vocabNames.1[Int(vocabNames.0[id])])
        }
        let vocabCount = vocabNames.0.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        var special: [Int: Bool] = [:]
        func add(_ t: AddedToken) throws {
            let id = Int(t.id)
            let name = String(decoding: t.content, as: UTF8.self)
            if let other = names[id] ?? vocabName(id), other != name {
                throw TokenizerError.duplicateID(id: id, first: other, second: name)
            }
            if id >= pieces.count { pieces.append(contentsOf: repeatElement(nil, count: id + 1 - pieces.count)) }
            if names[id] == nil && vocabName(id) == nil {
                // ByteLevel decoder over the content: alphabet characters map to bytes, otherwise UTF-8 as is.
                var raw: [UInt8] = []
                pieces[id] = appendByteLevelDecoded(t.content[...], to: &raw) ? raw : t.content
            }
            names[id] = name
            special[id] = t.special
            added.removeAll { $0.id == t.id }
            added.append(t)
        }
        if let v, !v.isNull {
            guard let list = v.array else { throw TokenizerError.wrongType(field: "added_tokens", expected: "an array", found: v.typeName) }
            for e in list {
                guard case .object = e else { throw TokenizerError.wrongType(field: "added_tokens[]", expected: "an object", found: e.typeName) }
                guard let id = doc.member(e, "id")?.int else { throw TokenizerError.missingField("added_tokens[].id") }
                let content = try str(doc.member(e, "content"), "added_tokens[].content")
                guard id >= 0, id < 1 << 24 else { throw TokenizerError.invalidID(token: content, id: id) }
                if let prev = added.first(where: { $0.id == Int32(id) }), prev.content != Array(content.utf8) {
                    throw TokenizerError.duplicateID(id: id, first: String(decoding: prev.content, as: UTF8.self), second: content)
                }
                try add(AddedToken(id: Int32(id), content: Array(content.utf8),
                                   singleWord: flag(e, "single_word", default: false),
                                   lstrip: flag(e, "lstrip", default: false),
                                   rstrip: flag(e, "rstrip", default: false),
                                   normalized: flag(e, "normalized", default: true),
                                   special: flag(e, "special", default: false)))
            }
        }
        let total = vocabCount + names.keys.filter { vocabName($0) == nil }.count
        if options.addMetaMorphImageTokens && pieces.count == 128256 && total == 128256 {
            let have = Set(names.values)
            func inVocab(_ s: String) -> Bool {
                var raw: [UInt8] = []
                return appendByteLevelDecoded(Array(s.utf8)[...], to: &raw) && model.vocab.find(raw) >= 0
            }
            if !have.contains("<image_start>") && !have.contains("<image_end>") && !inVocab("<image_start>") && !inVocab("<image_end>") {
                for (i, s) in ["<image_start>", "<image_end>"].enumerated() {
                    try add(AddedToken(id: Int32(128256 + i), content: Array(s.utf8), singleWord: false,
                                       lstrip: false, rstrip: false, normalized: false, special: true))
                }
            }
        }
        vocabSize = pieces.count
        validID = pieces.map { $0 != nil }
        specialID = [Bool](repeating: false, count: vocabSize)
        for (id, s) in special where s { specialID[id] = true }
        pieceOffsets.reserveCapacity(vocabSize + 1)
        pieceOffsets.append(0)
        for p in pieces {
            if let p { pieceBytes.append(contentsOf: p) }
            pieceOffsets.append(pieceBytes.count)
        }
        modelPieces = []
    }

    // MARK: post-processor

    mutating func buildPostProcessor(_ v: JSONValue?) throws {
        guard let v, !v.isNull else { return }
        let t = try typeOf(v, "post_processor")
        switch t {
        case "ByteLevel":
            return   // only affects offsets
        case "Sequence":
            guard let list = doc.member(v, "processors")?.array else { throw TokenizerError.missingField("post_processor.processors") }
            for x in list { try buildPostProcessor(x) }
        case "TemplateProcessing":
            guard template == nil else {
                throw TokenizerError.unsupported(component: "post_processor", detail: "more than one TemplateProcessing")
            }
            guard let single = doc.member(v, "single")?.array else { throw TokenizerError.missingField("post_processor.single") }
            var specials: [String: [Int32]] = [:]
            if case let .object(ms)? = doc.member(v, "special_tokens") {
                for mm in ms {
                    guard let ids = doc.member(mm.value, "ids")?.array else { throw TokenizerError.missingField("post_processor.special_tokens.ids") }
                    specials[doc.key(mm)] = try ids.map {
                        guard let i = $0.int, i >= 0, i < vocabSize else {
                            throw TokenizerError.unsupported(component: "post_processor", detail: "special token \(doc.key(mm)) has an id outside the vocabulary")
                        }
                        return Int32(i)
                    }
                }
            }
            var items: [TemplateItem] = []
            for it in single {
                if let st = doc.member(it, "SpecialToken") {
                    let name = try str(doc.member(st, "id"), "post_processor.single.SpecialToken.id")
                    guard let ids = specials[name] else {
                        throw TokenizerError.unsupported(component: "post_processor", detail: "template names special token \(name) missing from special_tokens")
                    }
                    items.append(.ids(ids))
                    if bosID == nil, !items.contains(where: { if case .sequence = $0 { return true }; return false }), let f = ids.first {
                        bosID = f
                    }
                } else if let sq = doc.member(it, "Sequence") {
                    let name = try str(doc.member(sq, "id"), "post_processor.single.Sequence.id")
                    guard name == "A" else { throw TokenizerError.unsupported(component: "post_processor", detail: "single template uses sequence \(name)") }
                    items.append(.sequence)
                } else {
                    throw TokenizerError.unsupported(component: "post_processor", detail: "template item \(it.typeName)")
                }
            }
            template = items
        default:
            throw TokenizerError.unknownType(component: "post_processor", type: t)
        }
    }
}

extension JSONDocument {
    func keyEquals2(_ a: JSONMember, _ b: JSONMember) -> Bool {
        a.keyCount == b.keyCount && heap[a.keyOffset ..< a.keyOffset + a.keyCount] == heap[b.keyOffset ..< b.keyOffset + b.keyCount]
    }
}
