/// Everything that can go wrong while loading a tokenizer or coding text.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// The file or directory could not be read.
    case cannotRead(path: String, reason: String)
    /// The configuration is not valid JSON.
    case invalidJSON(message: String, offset: Int)
    /// A required field is absent (e.g. `model`).
    case missingField(String)
    /// A field has the wrong JSON type.
    case wrongType(field: String, expected: String, found: String)
    /// A component's `type` is not one this library implements.
    case unknownType(component: String, type: String)
    /// A known component with a setting this library does not implement.
    case unsupported(component: String, detail: String)
    /// A merge names a token that is not in the vocabulary.
    case mergeUnknownToken(rank: Int, token: String)
    /// A merge entry is not "a b" or ["a", "b"].
    case malformedMerge(rank: Int, entry: String)
    /// Two different tokens claim the same id.
    case duplicateID(id: Int, first: String, second: String)
    /// A token id is negative or absurdly large in the configuration.
    case invalidID(token: String, id: Int)
    /// Input text is not valid UTF-8.
    case invalidUTF8(offset: Int)
    /// A token id passed to decode is not in the vocabulary.
    case idOutOfRange(id: Int, vocabSize: Int)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): return "cannot read tokenizer at \(path): \(reason)"
        case let .invalidJSON(message, offset): return "invalid JSON: \(message) at byte offset \(offset)"
        case let .missingField(f): return "tokenizer.json: missing `\(f)`"
        case let .wrongType(f, e, found): return "tokenizer.json: `\(f)` must be \(e), found \(found)"
        case let .unknownType(c, t): return "tokenizer.json: unknown type \"\(t)\" in \(c)"
        case let .unsupported(c, d): return "tokenizer.json: unsupported \(c): \(d)"
        case let .mergeUnknownToken(r, t): return "tokenizer.json: merge #\(r) names unknown token \"\(t)\""
        case let .malformedMerge(r, e): return "tokenizer.json: merge #\(r) is malformed: \(e)"
        case let .duplicateID(id, a, b): return "tokenizer.json: duplicate id \(id) for tokens \"\(a)\" and \"\(b)\""
        case let .invalidID(t, id): return "tokenizer.json: token \"\(t)\" has invalid id \(id)"
        case let .invalidUTF8(o): return "invalid UTF-8 at byte offset \(o)"
        case let .idOutOfRange(id, v): return "token id \(id) out of range 0..<\(v)"
        }
    }
}
