// A small, strict JSON reader over UTF-8 bytes (RFC 8259). It is used to load
// tokenizer.json (~9 MB) quickly and to read the CLI's JSON lines.
// All string contents are unescaped into one shared byte heap, so parsing a
// document with hundreds of thousands of strings does not allocate per string.

enum JSONValue {
    case null
    case bool(Bool)
    case number(Double)
    /// Offset and length of the unescaped UTF-8 bytes in `JSONDocument.heap`.
    case string(Int, Int)
    case array([JSONValue])
    case object([JSONMember])
}

struct JSONMember {
    var keyOffset: Int
    var keyCount: Int
    var value: JSONValue
}

struct JSONParseError: Error {
    var message: String
    var offset: Int
}

final class JSONDocument {
    var heap: [UInt8] = []
    var root: JSONValue = .null

    init(bytes: UnsafeBufferPointer<UInt8>) throws {
        heap.reserveCapacity(bytes.count / 2)
        var p = JSONParser(buf: bytes, doc: self)
        p.skipWS()
        root = try p.parseValue(depth: 0)
        p.skipWS()
        if p.pos != bytes.count { throw JSONParseError(message: "unexpected data after the JSON value", offset: p.pos) }
    }

    static func parse(_ bytes: [UInt8]) throws -> JSONDocument {
        try bytes.withUnsafeBufferPointer { try JSONDocument(bytes: $0) }
    }

    func string(_ v: JSONValue) -> String? {
        guard case let .string(o, n) = v else { return nil }
        return String(decoding: heap[o ..< o + n], as: UTF8.self)
    }

    func bytes(_ v: JSONValue) -> ArraySlice<UInt8>? {
        guard case let .string(o, n) = v else { return nil }
        return heap[o ..< o + n]
    }

    func key(_ m: JSONMember) -> String {
        String(decoding: heap[m.keyOffset ..< m.keyOffset + m.keyCount], as: UTF8.self)
    }

    func keyEquals(_ m: JSONMember, _ s: StaticString) -> Bool {
        if m.keyCount != s.utf8CodeUnitCount { return false }
        let p = s.utf8Start
        for i in 0 ..< m.keyCount where heap[m.keyOffset + i] != p[i] { return false }
        return true
    }

    /// Member lookup in an object (last duplicate wins, as serde does for maps).
    func member(_ v: JSONValue, _ name: StaticString) -> JSONValue? {
        guard case let .object(ms) = v else { return nil }
        var found: JSONValue? = nil
        for m in ms where keyEquals(m, name) { found = m.value }
        return found
    }
}

extension JSONValue {
    var isNull: Bool { if case .null = self { return true }; return false }
    var double: Double? { if case let .number(d) = self { return d }; return nil }
    var int: Int? {
        guard case let .number(d) = self, d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }
    var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

struct JSONParser {
    let buf: UnsafeBufferPointer<UInt8>
    unowned let doc: JSONDocument
    var pos = 0

    init(buf: UnsafeBufferPointer<UInt8>, doc: JSONDocument) {
        self.buf = buf
        self.doc = doc
    }

    @inline(__always) mutating func skipWS() {
        while pos < buf.count {
            let c = buf[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
        }
    }

    func fail(_ msg: String) -> JSONParseError { JSONParseError(message: msg, offset: pos) }

    mutating func parseValue(depth: Int) throws -> JSONValue {
        guard depth < 256 else { throw fail("nesting too deep") }
        guard pos < buf.count else { throw fail("unexpected end of input") }
        switch buf[pos] {
        case UInt8(ascii: "{"):
            pos += 1
            var members: [JSONMember] = []
            skipWS()
            if pos < buf.count, buf[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            while true {
                skipWS()
                guard pos < buf.count, buf[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let (ko, kn) = try parseString()
                skipWS()
                guard pos < buf.count, buf[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                pos += 1
                skipWS()
                let v = try parseValue(depth: depth + 1)
                members.append(JSONMember(keyOffset: ko, keyCount: kn, value: v))
                skipWS()
                guard pos < buf.count else { throw fail("unexpected end of input in object") }
                if buf[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if buf[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
                throw fail("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            pos += 1
            var items: [JSONValue] = []
            skipWS()
            if pos < buf.count, buf[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            while true {
                skipWS()
                items.append(try parseValue(depth: depth + 1))
                skipWS()
                guard pos < buf.count else { throw fail("unexpected end of input in array") }
                if buf[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if buf[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            let (o, n) = try parseString()
            return .string(o, n)
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0") ... UInt8(ascii: "9"):
            return .number(try parseNumber())
        default:
            throw fail("unexpected character")
        }
    }

    mutating func literal(_ s: StaticString) throws {
        let n = s.utf8CodeUnitCount
        guard pos + n <= buf.count else { throw fail("invalid literal") }
        for i in 0 ..< n where buf[pos + i] != s.utf8Start[i] { throw fail("invalid literal") }
        pos += n
    }

    mutating func parseNumber() throws -> Double {
        let start = pos
        var neg = false
        if buf[pos] == UInt8(ascii: "-") { neg = true; pos += 1 }
        guard pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 else { throw fail("invalid number") }
        var intVal: UInt64 = 0
        var digits = 0
        if buf[pos] == 0x30 {
            pos += 1
        } else {
            while pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 {
                if digits < 18 { intVal = intVal * 10 + UInt64(buf[pos] - 0x30) }
                digits += 1
                pos += 1
            }
        }
        var simple = digits <= 18
        if pos < buf.count, buf[pos] == UInt8(ascii: ".") {
            simple = false
            pos += 1
            guard pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 else { throw fail("invalid number") }
            while pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 { pos += 1 }
        }
        if pos < buf.count, buf[pos] == UInt8(ascii: "e") || buf[pos] == UInt8(ascii: "E") {
            simple = false
            pos += 1
            if pos < buf.count, buf[pos] == UInt8(ascii: "+") || buf[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 else { throw fail("invalid number") }
            while pos < buf.count, buf[pos] >= 0x30, buf[pos] <= 0x39 { pos += 1 }
        }
        if simple { return neg ? -Double(intVal) : Double(intVal) }
        let text = String(decoding: UnsafeBufferPointer(rebasing: buf[start ..< pos]), as: UTF8.self)
        guard let d = Double(text) else { throw fail("invalid number") }
        return d
    }

    /// Parses a string starting at the opening quote; returns its place in the heap.
    mutating func parseString() throws -> (Int, Int) {
        pos += 1
        let off = doc.heap.count
        var runStart = pos
        while true {
            guard pos < buf.count else { throw fail("unterminated string") }
            let c = buf[pos]
            if c == UInt8(ascii: "\"") {
                if pos > runStart { doc.heap.append(contentsOf: UnsafeBufferPointer(rebasing: buf[runStart ..< pos])) }
                pos += 1
                return (off, doc.heap.count - off)
            }
            if c < 0x20 { throw fail("unescaped control character in string") }
            if c == UInt8(ascii: "\\") {
                if pos > runStart { doc.heap.append(contentsOf: UnsafeBufferPointer(rebasing: buf[runStart ..< pos])) }
                pos += 1
                guard pos < buf.count else { throw fail("unterminated escape") }
                let e = buf[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""): doc.heap.append(0x22)
                case UInt8(ascii: "\\"): doc.heap.append(0x5C)
                case UInt8(ascii: "/"): doc.heap.append(0x2F)
                case UInt8(ascii: "b"): doc.heap.append(0x08)
                case UInt8(ascii: "f"): doc.heap.append(0x0C)
                case UInt8(ascii: "n"): doc.heap.append(0x0A)
                case UInt8(ascii: "r"): doc.heap.append(0x0D)
                case UInt8(ascii: "t"): doc.heap.append(0x09)
                case UInt8(ascii: "u"):
                    var cp = try hex4()
                    if cp >= 0xD800 && cp < 0xDC00 {
                        guard pos + 1 < buf.count, buf[pos] == UInt8(ascii: "\\"), buf[pos + 1] == UInt8(ascii: "u") else {
                            pos -= 6
                            throw fail("lone surrogate \\u\(hexString(cp)) in string")
                        }
                        pos += 2
                        let lo = try hex4()
                        guard lo >= 0xDC00 && lo < 0xE000 else {
                            pos -= 12
                            throw fail("lone surrogate \\u\(hexString(cp)) in string")
                        }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    } else if cp >= 0xDC00 && cp < 0xE000 {
                        pos -= 6
                        throw fail("lone surrogate \\u\(hexString(cp)) in string")
                    }
                    appendUTF8(cp)
                default:
                    pos -= 1
                    throw fail("invalid escape")
                }
                runStart = pos
                continue
            }
            pos += 1
        }
    }

    private func hexString(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    mutating func hex4() throws -> UInt32 {
        guard pos + 4 <= buf.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0 ..< 4 {
            let c = buf[pos]
            var d: UInt32
            switch c {
            case 0x30 ... 0x39: d = UInt32(c - 0x30)
            case 0x41 ... 0x46: d = UInt32(c - 0x41 + 10)
            case 0x61 ... 0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    mutating func appendUTF8(_ cp: UInt32) {
        if cp < 0x80 {
            doc.heap.append(UInt8(cp))
        } else if cp < 0x800 {
            doc.heap.append(UInt8(0xC0 | (cp >> 6)))
            doc.heap.append(UInt8(0x80 | (cp & 0x3F)))
        } else if cp < 0x10000 {
            doc.heap.append(UInt8(0xE0 | (cp >> 12)))
            doc.heap.append(UInt8(0x80 | ((cp >> 6) & 0x3F)))
            doc.heap.append(UInt8(0x80 | (cp & 0x3F)))
        } else {
            doc.heap.append(UInt8(0xF0 | (cp >> 18)))
            doc.heap.append(UInt8(0x80 | ((cp >> 12) & 0x3F)))
            doc.heap.append(UInt8(0x80 | ((cp >> 6) & 0x3F)))
            doc.heap.append(UInt8(0x80 | (cp & 0x3F)))
        }
    }
}

/// Returns the byte offset of the first invalid UTF-8 sequence, or nil if valid.
func firstInvalidUTF8(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
    var i = 0
    let n = b.count
    while i < n {
        // ASCII fast path, 8 bytes at a time.
        while i + 8 <= n {
            let w = UnsafeRawPointer(b.baseAddress! + i).loadUnaligned(as: UInt64.self)
            if w & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        if i >= n { break }
        let c = b[i]
        if c < 0x80 { i += 1; continue }
        let len = utf8SequenceLength(b, i)
        if len <= 0 { return i }
        i += len
    }
    return nil
}

/// Length of the well-formed UTF-8 sequence at `i`, or 0 if ill-formed/truncated.
@inline(__always)
func utf8SequenceLength(_ b: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
    let n = b.count
    let c = b[i]
    if c < 0x80 { return 1 }
    if c < 0xC2 { return 0 }
    if c < 0xE0 {
        return (i + 1 < n && b[i + 1] & 0xC0 == 0x80) ? 2 : 0
    }
    if c < 0xF0 {
        guard i + 2 < n else { return 0 }
        let c1 = b[i + 1]
        let lo: UInt8 = c == 0xE0 ? 0xA0 : 0x80
        let hi: UInt8 = c == 0xED ? 0x9F : 0xBF
        guard c1 >= lo, c1 <= hi, b[i + 2] & 0xC0 == 0x80 else { return 0 }
        return 3
    }
    if c < 0xF5 {
        guard i + 3 < n else { return 0 }
        let c1 = b[i + 1]
        let lo: UInt8 = c == 0xF0 ? 0x90 : 0x80
        let hi: UInt8 = c == 0xF4 ? 0x8F : 0xBF
        guard c1 >= lo, c1 <= hi, b[i + 2] & 0xC0 == 0x80, b[i + 3] & 0xC0 == 0x80 else { return 0 }
        return 4
    }
    return 0
}
