/// Small JSON helpers for tools (the CLI's JSON-lines mode).
public enum TokenizerJSON {
    /// Parses one JSON object and returns the UTF-8 bytes of its string field
    /// `name` (nil when absent). Throws a message on malformed JSON, lone
    /// surrogate escapes, or invalid UTF-8.
    public static func stringField(_ line: [UInt8], _ name: String) throws -> [UInt8]? {
        if let bad = line.withUnsafeBufferPointer({ firstInvalidUTF8($0) }) {
            throw TokenizerError.invalidUTF8(offset: bad)
        }
        let doc: JSONDocument
        do { doc = try JSONDocument.parse(line) } catch let e as JSONParseError {
            throw TokenizerError.invalidJSON(message: e.message, offset: e.offset)
        }
        guard case let .object(ms) = doc.root else {
            throw TokenizerError.wrongType(field: "(line)", expected: "an object", found: doc.root.typeName)
        }
        var found: JSONValue? = nil
        for m in ms where doc.key(m) == name { found = m.value }
        guard let v = found else { return nil }
        guard let b = doc.bytes(v) else { throw TokenizerError.wrongType(field: name, expected: "a string", found: v.typeName) }
        return Array(b)
    }

    /// Appends `s` as a JSON string literal (quotes, backslash and control
    /// characters escaped; other characters raw UTF-8).
    public static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        for b in s.utf8 {
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            case 0 ..< 0x20, 0x7F:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }
}
