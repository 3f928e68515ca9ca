// Hash tables for the hot path. Storage is raw memory owned by final classes
// that are never mutated after the tokenizer is built.

@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    let r = x.multipliedFullWidth(by: 0x9E37_79B9_7F4A_7C15)
    return r.high ^ r.low
}

@inline(__always)
func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(truncatingIfNeeded: n)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 8 <= n {
        h = mix64(h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        i += 8
    }
    if i < n {
        var v: UInt64 = 0
        var s: UInt64 = 0
        while i < n { v |= UInt64(p[i]) << s; s += 8; i += 1 }
        h = mix64(h ^ v ^ 0x5851_F42D_4C95_7F2D)
    }
    return h
}

/// Byte string -> id map (open addressing, linear probing).
final class BytesMap {
    private(set) var count = 0
    private var keys: [UInt8] = []
    private var entOff: [UInt32] = []
    private var entLen: [UInt32] = []
    private var entVal: [UInt32] = []
    private var slots: UnsafeMutablePointer<Int32>   // entry index or -1
    private var slotHash: UnsafeMutablePointer<UInt64>
    private var mask: Int
    // Frozen raw views for lookups.
    private var kp: UnsafeMutablePointer<UInt8>? = nil
    private var op: UnsafeMutablePointer<UInt32>? = nil
    private var lp: UnsafeMutablePointer<UInt32>? = nil
    private var vp: UnsafeMutablePointer<UInt32>? = nil

    init(capacity: Int) {
        var cap = 16
        while cap < capacity * 2 { cap <<= 1 }
        mask = cap - 1
        slots = .allocate(capacity: cap)
        slots.initialize(repeating: -1, count: cap)
        slotHash = .allocate(capacity: cap)
        slotHash.initialize(repeating: 0, count: cap)
    }

    deinit {
        slots.deallocate(); slotHash.deallocate()
        kp?.deallocate(); op?.deallocate(); lp?.deallocate(); vp?.deallocate()
    }

    /// Inserts or overwrites. Only before `freeze()`.
    func insert<C: Collection>(_ key: C, _ value: UInt32) where C.Element == UInt8 {
        let arr = Array(key)
        let h = arr.withUnsafeBufferPointer { hashBytes($0.baseAddress ?? UnsafePointer(bitPattern: 1)!, $0.count) }
        if count * 2 >= mask { grow() }
        var s = Int(truncatingIfNeeded: h) & mask
        while slots[s] >= 0 {
            let e = Int(slots[s])
            if slotHash[s] == h && Int(entLen[e]) == arr.count && keys[Int(entOff[e]) ..< Int(entOff[e]) + arr.count].elementsEqual(arr) {
                entVal[e] = value
                return
            }
            s = (s + 1) & mask
        }
        slots[s] = Int32(entOff.count)
        slotHash[s] = h
        entOff.append(UInt32(keys.count))
        entLen.append(UInt32(arr.count))
        entVal.append(value)
        keys.append(contentsOf: arr)
        count += 1
    }

    private func grow() {
        let oldCap = mask + 1
        let cap = oldCap * 2
        let ns = UnsafeMutablePointer<Int32>.allocate(capacity: cap)
        ns.initialize(repeating: -1, count: cap)
        let nh = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
        nh.initialize(repeating: 0, count: cap)
        for i in 0 ..< oldCap where slots[i] >= 0 {
            var s = Int(truncatingIfNeeded: slotHash[i]) & (cap - 1)
            while ns[s] >= 0 { s = (s + 1) & (cap - 1) }
            ns[s] = slots[i]; nh[s] = slotHash[i]
        }
        slots.deallocate(); slotHash.deallocate()
        slots = ns; slotHash = nh; mask = cap - 1
    }

    func freeze() {
        kp = .allocate(capacity: max(keys.count, 1)); kp!.initialize(from: keys, count: keys.count)
        op = .allocate(capacity: max(entOff.count, 1)); op!.initialize(from: entOff, count: entOff.count)
        lp = .allocate(capacity: max(entLen.count, 1)); lp!.initialize(from: entLen, count: entLen.count)
        vp = .allocate(capacity: max(entVal.count, 1)); vp!.initialize(from: entVal, count: entVal.count)
        keys = []; entOff = []; entLen = []; entVal = []
    }

    /// Lookup after `freeze()`. Returns -1 when absent.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64) -> Int32 {
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[s]
            if e < 0 { return -1 }
            if slotHash[s] == h {
                let ei = Int(e)
                if Int(lp![ei]) == n && memEqual(kp! + Int(op![ei]), p, n) { return Int32(bitPattern: vp![ei]) }
            }
            s = (s + 1) & mask
        }
    }

    func find(_ bytes: [UInt8]) -> Int32 {
        bytes.withUnsafeBufferPointer { b in
            let p = b.baseAddress ?? UnsafePointer(bitPattern: 1)!
            return find(p, b.count, hashBytes(p, b.count))
        }
    }
}

@inline(__always)
func memEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) { return false }
        i += 8
    }
    while i < n { if a[i] != b[i] { return false }; i += 1 }
    return true
}

/// (left id, right id) -> (rank, merged id), keyed by a UInt64.
final class MergeMap {
    private let keys: UnsafeMutablePointer<UInt64>
    private let vals: UnsafeMutablePointer<UInt64>
    private let mask: Int
    private let shift: UInt64
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int) {
        var cap = 16
        var bits: UInt64 = 4
        while cap < capacity * 2 { cap <<= 1; bits += 1 }
        mask = cap - 1
        shift = 64 - bits
        keys = .allocate(capacity: cap); keys.initialize(repeating: MergeMap.empty, count: cap)
        vals = .allocate(capacity: cap); vals.initialize(repeating: 0, count: cap)
    }
    deinit { keys.deallocate(); vals.deallocate() }

    @inline(__always) static func key(_ a: UInt32, _ b: UInt32) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    @inline(__always) private func slot(_ k: UInt64) -> Int { Int((k &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// Later insertions of the same pair overwrite earlier ones (as a Rust HashMap collect does).
    func insert(_ k: UInt64, rank: UInt32, id: UInt32) {
        precondition(count * 2 < mask + 1)
        var s = slot(k)
        while keys[s] != MergeMap.empty && keys[s] != k { s = (s + 1) & mask }
        if keys[s] != k { count += 1 }
        keys[s] = k
        vals[s] = UInt64(rank) << 32 | UInt64(id)
    }

    /// Returns rank << 32 | merged id, or UInt64.max if the pair does not merge.
    @inline(__always)
    func get(_ k: UInt64) -> UInt64 {
        var s = slot(k)
        while true {
            let kk = keys[s]
            if kk == k { return vals[s] }
            if kk == MergeMap.empty { return UInt64.max }
            s = (s + 1) & mask
        }
    }
}
