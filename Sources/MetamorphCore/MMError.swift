// Errors carry a C ABI status code (include/metamorph.h MM_ERR_*) and a message for a person.
// Every failure inside the engine is one of these; the ABI layer turns them into status codes.

public struct MMError: Error, CustomStringConvertible, Sendable {
    public enum Code: Int32, Sendable {
        case invalidArgument = 1, io = 2, format = 3, unsupported = 4, outOfMemory = 5
        case contextFull = 6, cancelled = 7, busy = 8, bufferTooSmall = 9, invalidUTF8 = 10
        case outOfRange = 11, internalError = 12, abiMismatch = 13
    }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) { self.code = code; self.message = message }
    public var description: String { message }

    public static func invalidArgument(_ m: String) -> MMError { MMError(.invalidArgument, m) }
    public static func io(_ m: String) -> MMError { MMError(.io, m) }
    public static func format(_ m: String) -> MMError { MMError(.format, m) }
    public static func unsupported(_ m: String) -> MMError { MMError(.unsupported, m) }
}
