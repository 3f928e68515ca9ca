// The LLaMA-3 split pattern, implemented by hand over UTF-8 bytes:
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// evaluated like a backtracking regex engine (first alternative that matches,
// leftmost match), with Unicode 16.0 categories (see UnicodeTables.swift).

/// Character classes the pattern distinguishes.
@usableFromInline enum CharClass: UInt8 {
    case other = 0      // punctuation, symbols, marks, controls, unassigned ...
    case letter = 1     // \p{L}
    case number = 2     // \p{N}
    case space = 3      // \s other than \r and \n
    case newline = 4    // \r or \n (also \s)
}

/// Class of every BMP code point, built once from the range tables.
let bmpClassTable: [UInt8] = {
    var t = [UInt8](repeating: CharClass.other.rawValue, count: 0x10000)
    func fill(_ r: [UInt32], _ c: CharClass) {
        var i = 0
        while i < r.count {
            let lo = Int(r[i]), hi = Int(r[i + 1])
            if lo < 0x10000 { for cp in lo ... min(hi, 0xFFFF) { t[cp] = c.rawValue } }
            i += 2
        }
    }
    fill(unicodeLetterRanges, .letter)
    fill(unicodeNumberRanges, .number)
    fill(unicodeWhiteSpaceRanges, .space)
    t[0x0A] = CharClass.newline.rawValue
    t[0x0D] = CharClass.newline.rawValue
    return t
}()

@inline(__always)
private func inRanges(_ r: [UInt32], _ cp: UInt32) -> Bool {
    var lo = 0, hi = r.count / 2
    while lo < hi {
        let mid = (lo + hi) >> 1
        if r[2 * mid + 1] < cp { lo = mid + 1 } else { hi = mid }
    }
    return lo < r.count / 2 && r[2 * lo] <= cp
}

func charClassSlow(_ cp: UInt32) -> CharClass {
    if cp < 0x10000 { return CharClass(rawValue: bmpClassTable[Int(cp)])! }
    if inRanges(unicodeLetterRanges, cp) { return .letter }
    if inRanges(unicodeNumberRanges, cp) { return .number }
    return .other  // no White_Space above the BMP
}

/// Scans pre-tokens of the LLaMA-3 pattern. Input must be valid UTF-8.
struct Llama3Splitter {
    let p: UnsafePointer<UInt8>
    let n: Int
    let table: UnsafePointer<UInt8>  // bmpClassTable
    var pos: Int

    @inline(__always)
    func decode(_ i: Int) -> (cls: CharClass, len: Int) {
        let c = p[i]
        if c < 0x80 { return (CharClass(rawValue: table[Int(c)])!, 1) }
        if c < 0xE0 {
            let cp = (UInt32(c & 0x1F) << 6) | UInt32(p[i + 1] & 0x3F)
            return (CharClass(rawValue: table[Int(cp)])!, 2)
        }
        if c < 0xF0 {
            let cp = (UInt32(c & 0x0F) << 12) | (UInt32(p[i + 1] & 0x3F) << 6) | UInt32(p[i + 2] & 0x3F)
            return (CharClass(rawValue: table[Int(cp)])!, 3)
        }
        let cp = (UInt32(c & 0x07) << 18) | (UInt32(p[i + 1] & 0x3F) << 12) | (UInt32(p[i + 2] & 0x3F) << 6) | UInt32(p[i + 3] & 0x3F)
        return (charClassSlow(cp), 4)
    }

    @inline(__always)
    func lower(_ b: UInt8) -> UInt8 { b | 0x20 }

    /// Length in bytes of a contraction at i (p[i] == '\''), or 0.
    @inline(__always)
    func contraction(_ i: Int) -> Int {
        guard i + 1 < n else { return 0 }
        let a = p[i + 1]
        if a == 0xC5, i + 2 < n, p[i + 2] == 0xBF { return 3 }  // U+017F LATIN SMALL LETTER LONG S folds to 's'
        let l = lower(a)
        if a < 0x80 && (l == UInt8(ascii: "s") || l == UInt8(ascii: "t") || l == UInt8(ascii: "m") || l == UInt8(ascii: "d")) { return 2 }
        guard i + 2 < n else { return 0 }
        let b = lower(p[i + 2])
        if l == UInt8(ascii: "r") && b == UInt8(ascii: "e") { return 3 }
        if l == UInt8(ascii: "v") && b == UInt8(ascii: "e") { return 3 }
        if l == UInt8(ascii: "l") && b == UInt8(ascii: "l") { return 3 }
        return 0
    }

    @inline(__always)
    func letterRun(_ i0: Int) -> Int {
        var i = i0
        while i < n {
            let (c, l) = decode(i)
            if c != .letter { break }
            i += l
        }
        return i
    }

    /// End of a run of [^\s\p{L}\p{N}]+[\r\n]* starting at i.
    @inline(__always)
    func punctRun(_ i0: Int) -> Int {
        var i = i0
        while i < n {
            let (c, l) = decode(i)
            if c != .other { break }
            i += l
        }
        while i < n, p[i] == 0x0A || p[i] == 0x0D { i += 1 }
        return i
    }

    /// Next pre-token as a byte range, or nil at the end.
    @inline(__always)
    mutating func next() -> Range<Int>? {
        let i = pos
        guard i < n else { return nil }
        let end = matchAt(i)
        pos = end
        return i ..< end
    }

    @inline(__always)
    func matchAt(_ i: Int) -> Int {
        let c0 = p[i]
        // ASCII letters: by far the most common start.
        if c0 == UInt8(ascii: "'") {
            let k = contraction(i)
            if k > 0 { return i + k }
        }
        let (cls, len) = decode(i)
        switch cls {
        case .letter:
            return letterRun(i + len)
        case .number:
            var j = i + len
            var count = 1
            while count < 3, j < n {
                let (c, l) = decode(j)
                if c != .number { break }
                j += l
                count += 1
            }
            return j
        case .other, .space:
            // [^\r\n\p{L}\p{N}]?\p{L}+
            let j = i + len
            if j < n {
                let (c1, l1) = decode(j)
                if c1 == .letter { return letterRun(j + l1) }
                if cls == .other { return punctRun(j) }
                // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
                if c0 == 0x20 && c1 == .other { return punctRun(j + l1) }
            } else if cls == .other {
                return j
            }
            return whitespace(i)
        case .newline:
            return whitespace(i)
        }
    }

    /// \s*[\r\n]+ | \s+(?!\S) | \s+ at a whitespace character.
    @inline(__always)
    func whitespace(_ i: Int) -> Int {
        var j = i
        var lastNL = -1
        var lastStart = i
        while j < n {
            let (c, l) = decode(j)
            if c == .newline { lastNL = j } else if c != .space { break }
            lastStart = j
            j += l
        }
        if lastNL >= 0 { return lastNL + 1 }
        if j == n { return j }
        if lastStart > i { return lastStart }
        return j
    }
}
