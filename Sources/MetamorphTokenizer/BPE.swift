// Byte-level BPE merging over token ids. A word is a byte string; its initial
// symbols are the single-byte tokens. Merges are applied lowest rank first, and
// among equal ranks leftmost first, exactly like `tokenizers`' BPE word merge.

/// Scratch buffers reused across words (one per encode call).
struct BPEScratch {
    var ids: [UInt32] = []
    var vals: [UInt64] = []
    // Long-word (heap) path.
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []
    var heap: [UInt64] = []
}

/// Words up to this many initial symbols use the quadratic scan over a small
/// array (fastest for short words); longer ones use a heap + linked list so a
/// megabyte-long word stays O(n log n).
let bpeShortWordLimit = 64

final class BPEModel {
    let vocab: BytesMap          // raw bytes -> id, for tokens made of byte-level characters
    let merges: MergeMap
    let byteToID: [Int32]        // 256 entries, -1 when a byte has no token
    let ignoreMerges: Bool

    init(vocab: BytesMap, merges: MergeMap, byteToID: [Int32], ignoreMerges: Bool) {
        self.vocab = vocab
        self.merges = merges
        self.byteToID = byteToID
        self.ignoreMerges = ignoreMerges
    }

    /// Appends the BPE tokens of one word.
    func merge(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32], scratch s: inout BPEScratch) {
        s.ids.removeAll(keepingCapacity: true)
        byteToID.withUnsafeBufferPointer { b2i in
            for i in 0 ..< n {
                let id = b2i[Int(p[i])]
                if id >= 0 { s.ids.append(UInt32(id)) }  // no unk token: unknown bytes are dropped
            }
        }
        let m = s.ids.count
        if m == 0 { return }
        if m == 1 { out.append(Int32(bitPattern: s.ids[0])); return }
        if m <= bpeShortWordLimit {
            mergeShort(&s)
        } else {
            mergeLong(&s)
        }
        for id in s.ids { out.append(Int32(bitPattern: id)) }
    }

    private func mergeShort(_ s: inout BPEScratch) {
        let none = UInt64.max
        var m = s.ids.count
        s.vals.removeAll(keepingCapacity: true)
        for k in 0 ..< m - 1 { s.vals.append(merges.get(MergeMap.key(s.ids[k], s.ids[k + 1]))) }
        s.ids.withUnsafeMutableBufferPointer { ids in
            s.vals.withUnsafeMutableBufferPointer { vals in
                while m > 1 {
                    var best = none
                    var bk = -1
                    for k in 0 ..< m - 1 where vals[k] < best {
                        best = vals[k]
                        bk = k
                    }
                    if bk < 0 { break }
                    ids[bk] = UInt32(truncatingIfNeeded: best)
                    // Remove ids[bk + 1] and vals[bk].
                    var k = bk + 1
                    while k < m - 1 { ids[k] = ids[k + 1]; k += 1 }
                    k = bk
                    while k < m - 2 { vals[k] = vals[k + 1]; k += 1 }
                    m -= 1
                    if bk > 0 { vals[bk - 1] = merges.get(MergeMap.key(ids[bk - 1], ids[bk])) }
                    if bk < m - 1 { vals[bk] = merges.get(MergeMap.key(ids[bk], ids[bk + 1])) }
                }
            }
        }
        s.ids.removeLast(s.ids.count - m)
    }

    private func mergeLong(_ s: inout BPEScratch) {
        let m = s.ids.count
        s.prev = Array(-1 ..< Int32(m - 1))
        s.next = Array(1 ... Int32(m))
        s.next[m - 1] = -1
        s.alive = [Bool](repeating: true, count: m)
        s.heap.removeAll(keepingCapacity: true)
        var heap = MinHeap(storage: s.heap)
        for k in 0 ..< m - 1 {
            let v = merges.get(MergeMap.key(s.ids[k], s.ids[k + 1]))
            if v != UInt64.max { heap.push((v >> 32) << 32 | UInt64(k)) }
        }
        while let top = heap.pop() {
            let pos = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            guard s.alive[pos] else { continue }
            let nx = Int(s.next[pos])
            if nx < 0 { continue }
            let v = merges.get(MergeMap.key(s.ids[pos], s.ids[nx]))
            if v == UInt64.max || v >> 32 != rank { continue }  // stale entry
            s.ids[pos] = UInt32(truncatingIfNeeded: v)
            s.alive[nx] = false
            let nn = Int(s.next[nx])
            s.next[pos] = Int32(nn)
            if nn >= 0 { s.prev[nn] = Int32(pos) }
            let pv = Int(s.prev[pos])
            if pv >= 0 {
                let w = merges.get(MergeMap.key(s.ids[pv], s.ids[pos]))
                if w != UInt64.max { heap.push((w >> 32) << 32 | UInt64(pv)) }
            }
            if nn >= 0 {
                let w = merges.get(MergeMap.key(s.ids[pos], s.ids[nn]))
                if w != UInt64.max { heap.push((w >> 32) << 32 | UInt64(pos)) }
            }
        }
        s.heap = heap.storage
        var out: [UInt32] = []
        out.reserveCapacity(m / 2)
        var k = 0
        while k >= 0 { out.append(s.ids[k]); k = Int(s.next[k]) }
        s.ids = out
    }
}

struct MinHeap {
    var storage: [UInt64]
    mutating func push(_ v: UInt64) {
        storage.append(v)
        var i = storage.count - 1
        while i > 0 {
            let parent = (i - 1) >> 1
            if storage[parent] <= v { break }
            storage[i] = storage[parent]
            i = parent
        }
        storage[i] = v
    }
    mutating func pop() -> UInt64? {
        guard let last = storage.popLast() else { return nil }
        if storage.isEmpty { return last }
        let top = storage[0]
        let n = storage.count
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var c = l
            if l + 1 < n && storage[l + 1] < storage[l] { c = l + 1 }
            if storage[c] >= last { break }
            storage[i] = storage[c]
            i = c
        }
        storage[i] = last
        return top
    }
}

/// Bounded word -> ids cache (direct mapped; cleared when its arenas fill up).
final class BPECache {
    static let slotBits = 14
    static let slotCount = 1 << slotBits
    static let keyCapacity = 1 << 20
    static let valCapacity = 1 << 18
    static let maxWordBytes = 256

    private let slotHash = UnsafeMutablePointer<UInt64>.allocate(capacity: slotCount)
    private let slotKey = UnsafeMutablePointer<UInt32>.allocate(capacity: slotCount)   // offset
    private let slotLen = UnsafeMutablePointer<UInt32>.allocate(capacity: slotCount)   // key len << 16 | val len
    private let slotVal = UnsafeMutablePointer<UInt32>.allocate(capacity: slotCount)
    private let keys = UnsafeMutablePointer<UInt8>.allocate(capacity: keyCapacity)
    private let vals = UnsafeMutablePointer<Int32>.allocate(capacity: valCapacity)
    private var keyUsed = 0
    private var valUsed = 0

    init() { slotHash.initialize(repeating: 0, count: BPECache.slotCount) }
    deinit {
        slotHash.deallocate(); slotKey.deallocate(); slotLen.deallocate(); slotVal.deallocate()
        keys.deallocate(); vals.deallocate()
    }

    @inline(__always)
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64, into out: inout [Int32]) -> Bool {
        let s = Int(truncatingIfNeeded: h >> 7) & (BPECache.slotCount - 1)
        guard slotHash[s] == h | 1 else { return false }
        let lens = slotLen[s]
        guard Int(lens >> 16) == n, memEqual(keys + Int(slotKey[s]), p, n) else { return false }
        let vo = Int(slotVal[s])
        for k in 0 ..< Int(lens & 0xFFFF) { out.append(vals[vo + k]) }
        return true
    }

    func store(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64, _ ids: ArraySlice<Int32>) {
        guard n <= BPECache.maxWordBytes, ids.count <= BPECache.maxWordBytes else { return }
        if keyUsed + n > BPECache.keyCapacity || valUsed + ids.count > BPECache.valCapacity {
            slotHash.update(repeating: 0, count: BPECache.slotCount)
            keyUsed = 0
            valUsed = 0
        }
        let s = Int(truncatingIfNeeded: h >> 7) & (BPECache.slotCount - 1)
        (keys + keyUsed).update(from: p, count: n)
        var k = valUsed
        for id in ids { vals[k] = id; k += 1 }
        slotHash[s] = h | 1
        slotKey[s] = UInt32(keyUsed)
        slotVal[s] = UInt32(valUsed)
        slotLen[s] = UInt32(n) << 16 | UInt32(ids.count)
        keyUsed += n
        valUsed += ids.count
    }
}
