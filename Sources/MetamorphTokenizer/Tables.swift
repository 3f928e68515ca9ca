#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Allocates a table; large ones are 2 MB aligned and marked for transparent huge
/// pages (fewer TLB misses on the random accesses of loading and lookups).
func allocTable<T>(_ type: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
    let bytes = max(count * MemoryLayout<T>.stride, 64)
    var raw: UnsafeMutableRawPointer? = nil
    let align = bytes >= 1 << 21 ? 1 << 21 : 64
    guard posix_memalign(&raw, align, bytes) == 0, let r = raw else { fatalError("out of memory") }
    #if os(Linux)
    if bytes >= 1 << 21 { _ = madvise(r, bytes, 14 /* MADV_HUGEPAGE */) }
    #endif
    return r.bindMemory(to: T.self, capacity: count)
}

func freeTable<T>(_ p: UnsafeMutablePointer<T>) { free(UnsafeMutableRawPointer(p)) }

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

/// Byte string -> id map (open addressing, linear probing). Each slot holds the
/// hash, length, value and either the key itself (keys of up to 8 bytes) or its
/// offset in the key arena, so a lookup usually touches one cache line.
final class BytesMap {
    struct Slot {
        var hash: UInt32
        var len: UInt32      // UInt32.max = empty
        var value: UInt32
        var pad: UInt32 = 0
        var key: UInt64      // packed key bytes (len <= 8) or arena offset
    }
    private(set) var count = 0
    private var keys: [UInt8] = []
    private var slots: UnsafeMutablePointer<Slot>
    private var mask: Int
    private var kp: UnsafeMutablePointer<UInt8>? = nil

    init(capacity: Int) {
        var cap = 16
        while cap < capacity * 2 { cap <<= 1 }
        mask = cap - 1
        slots = allocTable(Slot.self, cap)
        slots.initialize(repeating: Slot(hash: 0, len: UInt32.max, value: 0, key: 0), count: cap)
    }

    deinit {
        freeTable(slots)
        kp?.deallocate()
    }

    @inline(__always)
    static func pack(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: UInt64.self) }
        var v: UInt64 = 0
        var i = 0
        while i < n { v |= UInt64(p[i]) << UInt64(8 * i); i += 1 }
        return v
    }

    /// Inserts or overwrites. Only before `freeze()`.
    func insert(_ arr: [UInt8], _ value: UInt32) {
        precondition(kp == nil)
        if count * 2 >= mask { grow() }
        arr.withUnsafeBufferPointer { b in
            let p = b.baseAddress ?? UnsafePointer(bitPattern: 1)!
            let n = b.count
            let h = hashBytes(p, n)
            var s = Int(truncatingIfNeeded: h) & mask
            let h32 = UInt32(truncatingIfNeeded: h >> 32)
            while slots[s].len != UInt32.max {
                let sl = slots[s]
                if sl.hash == h32 && Int(sl.len) == n {
                    let same = n <= 8 ? sl.key == BytesMap.pack(p, n)
                        : keys[Int(sl.key) ..< Int(sl.key) + n].elementsEqual(b)
                    if same { slots[s].value = value; return }
                }
                s = (s + 1) & mask
            }
            var key: UInt64
            if n <= 8 {
                key = BytesMap.pack(p, n)
            } else {
                key = UInt64(keys.count)
                keys.append(contentsOf: b)
            }
            slots[s] = Slot(hash: h32, len: UInt32(n), value: value, key: key)
            count += 1
        }
    }

    private func grow() {
        let oldCap = mask + 1
        let cap = oldCap * 2
        let ns = allocTable(Slot.self, cap)
        ns.initialize(repeating: Slot(hash: 0, len: UInt32.max, value: 0, key: 0), count: cap)
        // Re-hash needs the full hash; recompute from the keys.
        for i in 0 ..< oldCap where slots[i].len != UInt32.max {
            let sl = slots[i]
            let n = Int(sl.len)
            var h: UInt64
            if n <= 8 {
                var k = sl.key
                h = withUnsafeBytes(of: &k) { hashBytes($0.bindMemory(to: UInt8.self).baseAddress!, n) }
            } else {
                h = keys.withUnsafeBufferPointer { hashBytes($0.baseAddress! + Int(sl.key), n) }
            }
            var s = Int(truncatingIfNeeded: h) & (cap - 1)
            while ns[s].len != UInt32.max { s = (s + 1) & (cap - 1) }
            ns[s] = sl
        }
        freeTable(slots)
        slots = ns
        mask = cap - 1
    }

    func freeze() {
        kp = .allocate(capacity: max(keys.count, 1))
        kp!.initialize(from: keys, count: keys.count)
        keys = []
    }

    /// Lookup after `freeze()`. Returns -1 when absent.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64) -> Int32 {
        var s = Int(truncatingIfNeeded: h) & mask
        let h32 = UInt32(truncatingIfNeeded: h >> 32)
        let packed: UInt64 = n <= 8 ? BytesMap.pack(p, n) : 0
        while true {
            let sl = slots[s]
            if sl.len == UInt32.max { return -1 }
            if sl.hash == h32 && Int(sl.len) == n {
                if n <= 8 {
                    if sl.key == packed { return Int32(bitPattern: sl.value) }
                } else if memEqual(kp! + Int(sl.key), p, n) {
                    return Int32(bitPattern: sl.value)
                }
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
    private let kv: UnsafeMutablePointer<(UInt64, UInt64)>
    private let mask: Int
    private let shift: UInt64
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int) {
        var cap = 16
        var bits: UInt64 = 4
        while cap < capacity + capacity / 2 + 16 { cap <<= 1; bits += 1 }
        mask = cap - 1
        shift = 64 - bits
        kv = allocTable((UInt64, UInt64).self, cap); kv.initialize(repeating: (MergeMap.empty, 0), count: cap)
    }
    deinit { freeTable(kv) }

    @inline(__always) static func key(_ a: UInt32, _ b: UInt32) -> UInt64 { UInt64(a) << 32 | UInt64(b) }

    @inline(__always) private func slot(_ k: UInt64) -> Int { Int((k &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// Later insertions of the same pair overwrite earlier ones (as a Rust HashMap collect does).
    func insert(_ k: UInt64, rank: UInt32, id: UInt32) {
        precondition(count < mask)
        var s = slot(k)
        while kv[s].0 != MergeMap.empty && kv[s].0 != k { s = (s + 1) & mask }
        if kv[s].0 != k { count += 1 }
        kv[s] = (k, UInt64(rank) << 32 | UInt64(id))
    }

    /// Returns rank << 32 | merged id, or UInt64.max if the pair does not merge.
    @inline(__always)
    func get(_ k: UInt64) -> UInt64 {
        var s = slot(k)
        while true {
            let e = kv[s]
            if e.0 == k { return e.1 }
            let kk = e.0
            if kk == MergeMap.empty { return UInt64.max }
            s = (s + 1) & mask
        }
    }
}
