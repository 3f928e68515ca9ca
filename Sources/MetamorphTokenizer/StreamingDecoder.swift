/// Turns generated ids into text incrementally. `push` returns only complete
/// UTF-8 characters; bytes of a character split across tokens are held until it
/// is complete. Bytes that can never form a valid character become U+FFFD, exactly
/// as a one-shot `decode` of all ids would render them. Not thread-safe (one per stream).
public final class StreamingDecoder {
    let tokenizer: Tokenizer
    let skipSpecialTokens: Bool
    private var pending: [UInt8] = []

    init(tokenizer: Tokenizer, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the text that became complete (possibly empty).
    public func push(_ id: Int32) throws -> String {
        guard id >= 0, Int(id) < tokenizer.vocabSize, tokenizer.validID[Int(id)] else {
            throw TokenizerError.idOutOfRange(id: Int(id), vocabSize: tokenizer.vocabSize)
        }
        if skipSpecialTokens && tokenizer.specialID[Int(id)] { return "" }
        tokenizer.appendPiece(id, to: &pending)
        let keep = incompleteTailLength(pending)
        if keep == pending.count { return "" }
        let text = String(decoding: pending[..<(pending.count - keep)], as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return text
    }

    /// Flushes what is left (an incomplete character becomes U+FFFD).
    public func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// True when bytes are being held back.
    public var hasPendingBytes: Bool { !pending.isEmpty }
}

/// Length of a trailing, still-completable prefix of a UTF-8 character (0...3).
func incompleteTailLength(_ b: [UInt8]) -> Int {
    let n = b.count
    var k = n - 1
    var cont = 0
    while k >= 0 && cont < 3 && b[k] & 0xC0 == 0x80 { k -= 1; cont += 1 }
    guard k >= 0 else { return 0 }
    let lead = b[k]
    let need: Int
    switch lead {
    case 0xC2 ... 0xDF: need = 2
    case 0xE0 ... 0xEF: need = 3
    case 0xF0 ... 0xF4: need = 4
    default: return 0
    }
    let have = n - k
    if have >= need { return 0 }
    // The bytes present must be a valid prefix.
    if have >= 2 {
        let c1 = b[k + 1]
        switch lead {
        case 0xE0: if c1 < 0xA0 { return 0 }
        case 0xED: if c1 > 0x9F { return 0 }
        case 0xF0: if c1 < 0x90 { return 0 }
        case 0xF4: if c1 > 0x8F { return 0 }
        default: break
        }
    }
    return have
}
