// Tests of MetamorphKernels: every fast kernel against its _ref twin on awkward sizes, all weight
// dtypes and 1 and 2 threads; the references themselves against small hand-computed cases.
import Foundation
import MetamorphKernels
import XCTest

// MARK: - helpers

let F32 = Int32(MMK_F32), F16 = Int32(MMK_F16), BF16 = Int32(MMK_BF16)
let allDtypes: [Int32] = [F32, F16, BF16]
func dtypeName(_ d: Int32) -> String { d == F16 ? "f16" : d == BF16 ? "bf16" : "f32" }

/// Deterministic generator (SplitMix64) so failures reproduce.
struct Rng {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// uniform in [-1, 1)
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float() * scale } }
}

/// A weight tensor in its stored dtype plus the exact float values it holds.
struct Weights {
    let dtype: Int32
    let bytes: [UInt8]
    let values: [Float]

    init(_ dtype: Int32, _ src: [Float]) {
        self.dtype = dtype
        let n = src.count
        switch dtype {
        case F16:
            var h = [UInt16](repeating: 0, count: n)
            mmk_f32_to_f16(src, &h, Int64(n))
            bytes = h.withUnsafeBytes { Array($0) }
            values = h.map { Float(Float16(bitPattern: $0)) }
        case BF16:
            var h = [UInt16](repeating: 0, count: n)
            mmk_f32_to_bf16(src, &h, Int64(n))
            bytes = h.withUnsafeBytes { Array($0) }
            values = h.map { Float(bitPattern: UInt32($0) << 16) }
        default:
            bytes = src.withUnsafeBytes { Array($0) }
            values = src
        }
    }
}

/// Calls body with a pointer to the array's storage, or nil for a nil array.
func withOptional<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) -> R) -> R {
    guard let a else { return body(nil) }
    return a.withUnsafeBufferPointer { body($0.baseAddress) }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// Elementwise check |a-b| <= atol + rtol*|b|; returns the max abs diff seen.
@discardableResult
func assertClose(_ a: [Float], _ b: [Float], rtol: Float, atol: Float, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    var worst: Float = 0
    for i in a.indices {
        let d = abs(a[i] - b[i])
        worst = max(worst, d)
        if !(d <= atol + rtol * abs(b[i])) {
            XCTFail("\(what): index \(i) got \(a[i]) want \(b[i]) (diff \(d))", file: file, line: line)
            return d
        }
    }
    return worst
}

// MARK: - conversions

final class ConversionTests: XCTestCase {
    func f16(_ x: Float) -> UInt16 { var o: UInt16 = 0; mmk_f32_to_f16([x], &o, 1); return o }
    func bf16(_ x: Float) -> UInt16 { var o: UInt16 = 0; mmk_f32_to_bf16([x], &o, 1); return o }
    func fromBits(_ dt: Int32, _ b: UInt16) -> Float { var o: Float = 0; mmk_convert_to_f32(dt, [b], &o, 1); return o }

    func testDtypeSize() {
        XCTAssertEqual(mmk_dtype_size(F32), 4)
        XCTAssertEqual(mmk_dtype_size(F16), 2)
        XCTAssertEqual(mmk_dtype_size(BF16), 2)
        XCTAssertEqual(mmk_dtype_size(7), 0)
    }

    func testF16KnownValues() {
        XCTAssertEqual(f16(1.0), 0x3C00)
        XCTAssertEqual(f16(-2.5), 0xC100)
        XCTAssertEqual(f16(65504), 0x7BFF)            // largest finite half
        XCTAssertEqual(f16(65519), 0x7BFF)            // below the halfway point: stays finite
        XCTAssertEqual(f16(65520), 0x7C00)            // halfway to 65536, ties to even = inf
        XCTAssertEqual(f16(.infinity), 0x7C00)
        XCTAssertEqual(f16(-.infinity), 0xFC00)
        XCTAssertEqual(f16(0), 0x0000)
        XCTAssertEqual(f16(-0.0), 0x8000)
        XCTAssertEqual(f16(0x1p-24), 0x0001)          // smallest subnormal
        XCTAssertEqual(f16(0x1p-25), 0x0000)          // exactly half of it: ties to even 0
        XCTAssertEqual(f16(0x1.8p-25), 0x0001)        // 0.75 ulp rounds up
        XCTAssertEqual(f16(0x1.8p-24), 0x0002)        // 1.5 ulp ties to even 2
        XCTAssertEqual(f16(0x1p-14), 0x0400)          // smallest normal
        XCTAssertEqual(f16(1023 * 0x1p-24), 0x03FF)   // largest subnormal
        XCTAssertEqual(f16(1 + 0x1p-11), 0x3C00)      // tie between 1 and 1+2^-10: even (1)
        XCTAssertEqual(f16(1 + 0x1.8p-10), 0x3C02)    // tie between odd 0x3C01 and 0x3C02: even
        XCTAssertEqual(f16(1e-9), 0x0000)
        XCTAssertTrue(fromBits(F16, f16(.nan)).isNaN)
        XCTAssertEqual(fromBits(F16, 0x3C00), 1.0)
        XCTAssertEqual(fromBits(F16, 0xC100), -2.5)
        XCTAssertEqual(fromBits(F16, 0x7BFF), 65504)
        XCTAssertEqual(fromBits(F16, 0x0001), 0x1p-24)
        XCTAssertEqual(fromBits(F16, 0x8001), -0x1p-24)
        XCTAssertEqual(fromBits(F16, 0x03FF), 1023 * 0x1p-24)
        XCTAssertEqual(fromBits(F16, 0x7C00), .infinity)
        XCTAssertEqual(fromBits(F16, 0x8000).sign, .minus)
    }

    /// All 65536 half bit patterns, through both the vector body and the scalar tail (offset 3).
    func testF16AllPatternsRoundTrip() {
        let bits = (0...0xFFFF).map { UInt16($0) }
        for offset in [0, 3] {
            let src = Array(bits[offset...])
            var f = [Float](repeating: 0, count: src.count)
            mmk_convert_to_f32(F16, src, &f, Int64(src.count))
            var back = [UInt16](repeating: 0, count: src.count)
            mmk_f32_to_f16(f, &back, Int64(src.count))
            for i in src.indices {
                let want = Float(Float16(bitPattern: src[i]))
                if want.isNaN {
                    XCTAssertTrue(f[i].isNaN)
                    XCTAssertTrue(Float16(bitPattern: back[i]).isNaN)
                } else {
                    XCTAssertEqual(f[i].bitPattern, want.bitPattern, "f16 \(src[i]) -> f32")
                    XCTAssertEqual(back[i], src[i], "f16 \(src[i]) round trip")
                }
            }
        }
    }

    /// float -> half must agree with Swift's Float16 (round to nearest even) on random floats of
    /// every magnitude, in the vector body and the scalar tail.
    func testF16MatchesSwiftFloat16() {
        var rng = Rng(1)
        var xs: [Float] = []
        for _ in 0..<20001 {
            let e = Int(rng.next() % 50) - 30     // 2^-30 ... 2^19: subnormal to overflow
            xs.append(rng.float() * Float(sign: .plus, exponent: e, significand: 1))
        }
        var h = [UInt16](repeating: 0, count: xs.count)
        mmk_f32_to_f16(xs, &h, Int64(xs.count))
        var bad = 0
        for i in xs.indices where h[i] != Float16(xs[i]).bitPattern { bad += 1 }
        XCTAssertEqual(bad, 0, "f32->f16 mismatches vs Swift Float16")
    }

    func testBF16KnownValues() {
        XCTAssertEqual(bf16(1.0), 0x3F80)
        XCTAssertEqual(bf16(-2.5), 0xC020)
        XCTAssertEqual(bf16(Float(bitPattern: 0x3F80_8000)), 0x3F80)  // tie, even below
        XCTAssertEqual(bf16(Float(bitPattern: 0x3F81_8000)), 0x3F82)  // tie, odd below: up
        XCTAssertEqual(bf16(Float(bitPattern: 0x3F80_8001)), 0x3F81)  // above tie: up
        XCTAssertEqual(bf16(Float(bitPattern: 0x3F80_7FFF)), 0x3F80)  // below tie: down
        XCTAssertEqual(bf16(Float.greatestFiniteMagnitude), 0x7F80)   // rounds up to inf
        XCTAssertEqual(bf16(.infinity), 0x7F80)
        XCTAssertEqual(bf16(Float(bitPattern: 0x0000_0001)), 0x0000)  // float subnormal
        XCTAssertTrue(fromBits(BF16, bf16(.nan)).isNaN)
        XCTAssertTrue(fromBits(BF16, bf16(Float(bitPattern: 0x7F80_0001))).isNaN)  // payload only in low bits
        XCTAssertEqual(fromBits(BF16, 0x3F80), 1.0)
        XCTAssertEqual(fromBits(BF16, 0xC020), -2.5)
        XCTAssertEqual(fromBits(BF16, 0x0001), Float(bitPattern: 0x0001_0000))
    }

    func testBF16AllPatternsRoundTrip() {
        let src = (0...0xFFFF).map { UInt16($0) }
        var f = [Float](repeating: 0, count: src.count)
        mmk_convert_to_f32(BF16, src, &f, Int64(src.count))
        var back = [UInt16](repeating: 0, count: src.count)
        mmk_f32_to_bf16(f, &back, Int64(src.count))
        for i in src.indices {
            XCTAssertEqual(f[i].bitPattern, UInt32(src[i]) << 16)
            if f[i].isNaN { XCTAssertTrue(fromBits(BF16, back[i]).isNaN) } else { XCTAssertEqual(back[i], src[i]) }
        }
    }

    func testConvertF32IsCopy() {
        let xs: [Float] = [1, -2, 3.5, .infinity, 0]
        var out = [Float](repeating: 9, count: 5)
        mmk_convert_to_f32(F32, xs, &out, 5)
        XCTAssertEqual(out, xs)
    }
}

// MARK: - matvec / matmul

final class LinearTests: XCTestCase {
    func testMatvecRefHandComputed() {
        // W = [[1,2,3],[4,5,6]], x = [1,0,-1]  ->  [-2,-2]; with bias [0.5,1] -> [-1.5,-1]
        for dt in allDtypes {
            let w = Weights(dt, [1, 2, 3, 4, 5, 6])
            var y = [Float](repeating: 0, count: 2)
            mmk_matvec_ref(dt, w.bytes, nil, [1, 0, -1], &y, 2, 3)
            XCTAssertEqual(y, [-2, -2], dtypeName(dt))
            mmk_matvec_ref(dt, w.bytes, [0.5, 1], [1, 0, -1], &y, 2, 3)
            XCTAssertEqual(y, [-1.5, -1], dtypeName(dt))
            mmk_matvec(dt, w.bytes, [0.5, 1], [1, 0, -1], &y, 2, 3, 2)
            XCTAssertEqual(y, [-1.5, -1], dtypeName(dt))
        }
    }

    func testMatmulRefHandComputed() {
        // X rows e_0, e_1, (1,1), (2,-1), (0,0) against W = [[1,2],[3,4],[5,6]]: Y[i][j] = X_i . W_j
        let X: [Float] = [1, 0, 0, 1, 1, 1, 2, -1, 0, 0]
        let want: [Float] = [1, 3, 5, 2, 4, 6, 3, 7, 11, 0, 2, 4, 0, 0, 0]
        for dt in allDtypes {
            let w = Weights(dt, [1, 2, 3, 4, 5, 6])
            var y = [Float](repeating: 0, count: 15)
            mmk_matmul_ref(dt, w.bytes, nil, X, &y, 5, 3, 2)
            XCTAssertEqual(y, want, dtypeName(dt))
            y = [Float](repeating: 0, count: 15)
            mmk_matmul(dt, w.bytes, nil, X, &y, 5, 3, 2, 2)  // m = 5 takes the sgemm path
            XCTAssertEqual(y, want, dtypeName(dt))
            mmk_matmul(dt, w.bytes, [1, 1, 1], X, &y, 5, 3, 2, 1)
            XCTAssertEqual(y, want.map { $0 + 1 }, dtypeName(dt))
        }
    }

    /// |fast - ref| <= rtol * sum_p |w x| (+ |bias|): the error scale of a float32 dot product.
    func checkLinear(m: Int, n: Int, k: Int, dt: Int32, threads: [Int32], bias: Bool, rng: inout Rng) -> Float {
        let w = Weights(dt, rng.floats(n * k, scale: 0.5))
        let x = rng.floats(m * k)
        let b: [Float]? = bias ? rng.floats(n) : nil
        var ref = [Float](repeating: .nan, count: m * n)
        withOptional(b) { bp in
            if m == 1 { mmk_matvec_ref(dt, w.bytes, bp, x, &ref, Int64(n), Int64(k)) }
            else { mmk_matmul_ref(dt, w.bytes, bp, x, &ref, Int64(m), Int64(n), Int64(k)) }
        }
        // the error scale sum_p |w x| (+ |bias|) is itself a matmul: the reference on |W|, |X|
        let absW = Weights(dt, w.values.map { abs($0) })
        var scale = [Float](repeating: 0, count: m * n)
        withOptional(b?.map { abs($0) }) { bp in
            mmk_matmul_ref(dt, absW.bytes, bp, x.map { abs($0) }, &scale, Int64(m), Int64(n), Int64(k))
        }
        let rtol: Float = 1e-5
        var worst: Float = 0
        for t in threads {
            var fast = [Float](repeating: .nan, count: m * n)
            withOptional(b) { bp in
                if m == 1 { mmk_matvec(dt, w.bytes, bp, x, &fast, Int64(n), Int64(k), t) }
                else { mmk_matmul(dt, w.bytes, bp, x, &fast, Int64(m), Int64(n), Int64(k), t) }
            }
            for idx in 0..<(m * n) {
                let d = abs(fast[idx] - ref[idx])
                worst = max(worst, d)
                if !(d <= rtol * scale[idx] + 1e-30) {
                    XCTFail("m=\(m) n=\(n) k=\(k) \(dtypeName(dt)) t=\(t): [\(idx / n),\(idx % n)] fast \(fast[idx]) ref \(ref[idx])")
                    return d
                }
            }
        }
        return worst
    }

    func testMatvecMatchesRef() {
        var rng = Rng(2)
        for dt in allDtypes {
            var worst: Float = 0
            for n in [1, 4, 7, 33, 257] {
                for k in [1, 3, 8, 16, 31, 1000] {
                    worst = max(worst, checkLinear(m: 1, n: n, k: k, dt: dt, threads: [1, 2, 0], bias: (n + k) % 2 == 0, rng: &rng))
                }
            }
            // big enough to really run on two threads with unequal shares
            worst = max(worst, checkLinear(m: 1, n: 1027, k: 2049, dt: dt, threads: [1, 2], bias: true, rng: &rng))
            print("matvec \(dtypeName(dt)) fast vs ref: max abs diff \(worst)")
        }
    }

    func testMatmulMatchesRef() {
        var rng = Rng(3)
        for dt in allDtypes {
            var worst: Float = 0
            for m in [1, 3, 5, 64] {
                for n in [1, 7, 33, 257] {
                    for k in [1, 3, 31, 1000] {
                        worst = max(worst, checkLinear(m: m, n: n, k: k, dt: dt, threads: [1, 2, -1], bias: (m + n) % 2 == 0, rng: &rng))
                    }
                }
            }
            // several converted blocks (512 rows each at this k) plus a ragged last block
            worst = max(worst, checkLinear(m: 9, n: 1100, k: 64, dt: dt, threads: [1, 2], bias: true, rng: &rng))
            print("matmul \(dtypeName(dt)) fast vs ref: max abs diff \(worst)")
        }
    }
}

// MARK: - norms and rope

final class NormRopeTests: XCTestCase {
    func testRMSNormRefHandComputed() {
        // x = [3, 4]: mean square 12.5, 1/sqrt = 0.28284271
        var out = [Float](repeating: 0, count: 2)
        let w = Weights(F32, [1, 2])
        mmk_rmsnorm_ref(&out, [3, 4], F32, w.bytes, 1, 2, 0)
        XCTAssertEqual(out[0], 3 * 0.28284271, accuracy: 1e-6)
        XCTAssertEqual(out[1], 8 * 0.28284271, accuracy: 1e-6)
        // eps enters under the root: x = [1], eps = 3 -> 1/2
        mmk_rmsnorm_ref(&out, [1, 0], F32, w.bytes, 1, 1, 3)
        XCTAssertEqual(out[0], 0.5, accuracy: 1e-7)
    }

    func testLayerNormRefHandComputed() {
        // x = [1,2,3]: mean 2, biased variance 2/3 -> [-1.2247449, 0, 1.2247449]; then *2 + 1
        var out = [Float](repeating: 0, count: 3)
        mmk_layernorm_ref(&out, [1, 2, 3], F32, nil, nil, 1, 3, 0)
        XCTAssertEqual(out[0], -1.2247449, accuracy: 1e-6)
        XCTAssertEqual(out[1], 0, accuracy: 1e-7)
        XCTAssertEqual(out[2], 1.2247449, accuracy: 1e-6)
        for dt in allDtypes {
            let w = Weights(dt, [2, 2, 2]), b = Weights(dt, [1, 1, 1])
            mmk_layernorm_ref(&out, [1, 2, 3], dt, w.bytes, b.bytes, 1, 3, 0)
            XCTAssertEqual(out[0], 1 - 2 * 1.2247449, accuracy: 1e-6)
            XCTAssertEqual(out[2], 1 + 2 * 1.2247449, accuracy: 1e-6)
        }
    }

    func testNormsMatchRef() {
        var rng = Rng(4)
        var worstRms: Float = 0, worstLn: Float = 0
        for dt in allDtypes {
            for rows in [1, 3, 5, 64] {
                for dim in [1, 7, 33, 257, 1000] {
                    let x = rng.floats(rows * dim, scale: 3)
                    let w = Weights(dt, rng.floats(dim)), b = Weights(dt, rng.floats(dim))
                    for t: Int32 in [1, 2] {
                        var fast = [Float](repeating: .nan, count: x.count), ref = fast
                        mmk_rmsnorm(&fast, x, dt, w.bytes, Int64(rows), Int64(dim), 1e-5, t)
                        mmk_rmsnorm_ref(&ref, x, dt, w.bytes, Int64(rows), Int64(dim), 1e-5)
                        worstRms = max(worstRms, assertClose(fast, ref, rtol: 2e-7, atol: 1e-7, "rmsnorm \(dtypeName(dt)) \(rows)x\(dim)"))
                        var inPlace = x
                        inPlace.withUnsafeMutableBufferPointer { p in
                            mmk_rmsnorm(p.baseAddress, p.baseAddress, dt, w.bytes, Int64(rows), Int64(dim), 1e-5, t)
                        }
                        XCTAssertEqual(inPlace, fast, "rmsnorm in place")

                        mmk_layernorm(&fast, x, dt, w.bytes, b.bytes, Int64(rows), Int64(dim), 1e-5, t)
                        mmk_layernorm_ref(&ref, x, dt, w.bytes, b.bytes, Int64(rows), Int64(dim), 1e-5)
                        worstLn = max(worstLn, assertClose(fast, ref, rtol: 2e-7, atol: 1e-7, "layernorm \(dtypeName(dt)) \(rows)x\(dim)"))
                        inPlace = x
                        inPlace.withUnsafeMutableBufferPointer { p in
                            mmk_layernorm(p.baseAddress, p.baseAddress, dt, w.bytes, b.bytes, Int64(rows), Int64(dim), 1e-5, t)
                        }
                        XCTAssertEqual(inPlace, fast, "layernorm in place")
                    }
                }
            }
        }
        print("rmsnorm fast vs ref: max abs diff \(worstRms); layernorm: \(worstLn)")
    }

    func testRopeRefHandComputed() {
        // head_dim 4, pairs (0,2) and (1,3); inv_freq [1, 0.01]; position 1
        var x: [Float] = [1, 2, 3, 4]
        mmk_rope_ref(&x, [1], 1, 1, 4, [1, 0.01])
        let c1 = cos(Float(1)), s1 = sin(Float(1)), c2 = cos(Float(0.01)), s2 = sin(Float(0.01))
        XCTAssertEqual(x[0], 1 * c1 - 3 * s1, accuracy: 1e-6)
        XCTAssertEqual(x[2], 3 * c1 + 1 * s1, accuracy: 1e-6)
        XCTAssertEqual(x[1], 2 * c2 - 4 * s2, accuracy: 1e-6)
        XCTAssertEqual(x[3], 4 * c2 + 2 * s2, accuracy: 1e-6)
        // position 0 is the identity; a rotation keeps each pair's norm
        var y: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
        mmk_rope_ref(&y, [0, 1000], 2, 1, 4, [1, 0.01])
        XCTAssertEqual(Array(y[0..<4]), [1, 2, 3, 4])
        XCTAssertEqual(y[4] * y[4] + y[6] * y[6], 25 + 49, accuracy: 1e-4)
    }

    func testRopeMatchesRef() {
        var rng = Rng(5)
        var worst: Float = 0
        for nTok in [1, 3, 9, 70] {
            for heads in [1, 3, 8] {
                for hd in [2, 6, 16, 64, 130] {
                    let half = hd / 2
                    let invFreq = (0..<half).map { Float(pow(10000.0, -2.0 * Double($0) / Double(hd))) }
                    let pos = (0..<nTok).map { _ in Int32(rng.next() % 4096) }
                    let x = rng.floats(nTok * heads * hd)
                    for t: Int32 in [1, 2] {
                        var fast = x, ref = x
                        mmk_rope(&fast, pos, Int64(nTok), Int32(heads), Int32(hd), invFreq, t)
                        mmk_rope_ref(&ref, pos, Int64(nTok), Int32(heads), Int32(hd), invFreq)
                        // same cos/sin; only fused vs separate multiply-add rounding may differ
                        worst = max(worst, assertClose(fast, ref, rtol: 0, atol: 4e-7, "rope \(nTok)x\(heads)x\(hd)"))
                    }
                }
            }
        }
        print("rope fast vs ref: max abs diff \(worst)")
    }
}

// MARK: - attention

final class AttentionTests: XCTestCase {
    func testSingleKeyReturnsValue() {
        let v: [Float] = [0.5, -1, 2]
        var out = [Float](repeating: 0, count: 3)
        mmk_attention_ref(&out, [3, 1, 4], [1, 5, 9], v, 1, 0, 1, 1, 1, 3, 3, 0.7)
        XCTAssertEqual(out, v)
        out = [0, 0, 0]
        mmk_attention(&out, [3, 1, 4], [1, 5, 9], v, 1, 0, 1, 1, 1, 3, 3, 0.7, 2)
        XCTAssertEqual(out, v)
    }

    func testTwoKeysHandComputed() {
        // head_dim 1, scale 1: scores [0, ln 3] -> weights [1/4, 3/4] -> 0.25*1 + 0.75*5 = 4
        var out: [Float] = [0]
        mmk_attention_ref(&out, [1], [0, Float(log(3.0))], [1, 5], 1, 1, 2, 1, 1, 1, 1, 1)
        XCTAssertEqual(out[0], 4, accuracy: 1e-6)
        mmk_attention_full_ref(&out, [1], [0, Float(log(3.0))], [1, 5], 1, 2, 1, 1, 1, 1, 1, 1)
        XCTAssertEqual(out[0], 4, accuracy: 1e-6)
    }

    func testCausalMasking() {
        // 3 queries at positions 0,1,2 over 3 keys: query 0 sees only key 0, so its output is v[0]
        // whatever the scores; with equal keys query i averages v[0...i].
        let hd = 2
        let q: [Float] = [1, 2, -3, 0.5, 2, 2]
        let k: [Float] = [1, 1, 1, 1, 1, 1]
        let v: [Float] = [1, 10, 2, 20, 6, 60]
        var ref = [Float](repeating: 0, count: 6), fast = ref
        mmk_attention_ref(&ref, q, k, v, 3, 0, 3, 1, 1, Int32(hd), 2, 1)
        mmk_attention(&fast, q, k, v, 3, 0, 3, 1, 1, Int32(hd), 2, 1, 2)
        for out in [ref, fast] {
            XCTAssertEqual(out[0], 1, accuracy: 1e-6)
            XCTAssertEqual(out[1], 10, accuracy: 1e-6)
            XCTAssertEqual(out[2], 1.5, accuracy: 1e-6)
            XCTAssertEqual(out[3], 15, accuracy: 1e-5)
            XCTAssertEqual(out[4], 3, accuracy: 1e-6)
            XCTAssertEqual(out[5], 30, accuracy: 1e-5)
        }
        // non-causal: the first query sees all three keys too
        var full = [Float](repeating: 0, count: 6)
        mmk_attention_full(&full, q, k, v, 3, 3, 1, Int32(hd), 2, 2, 2, 1, 1)
        XCTAssertEqual(full[0], 3, accuracy: 1e-6)
        XCTAssertEqual(full[1], 30, accuracy: 1e-5)
    }

    func testAttentionMatchesRef() {
        var rng = Rng(6)
        var worst: Float = 0
        // (n_q, q_pos0, n_kv): prefill, decode, chunked prefill, positions past the cache end
        let shapes: [(Int, Int, Int)] = [(1, 0, 1), (1, 36, 37), (7, 0, 7), (3, 5, 8), (2, 10, 4), (33, 0, 33), (1, 300, 301)]
        let headCfg: [(Int, Int)] = [(4, 2), (3, 3), (8, 1)]
        for (nq, p0, nkv) in shapes {
            for (nh, nkvh) in headCfg {
                for hd in [1, 5, 8, 64, 67] {
                    for pad in [0, 3] {
                        let kvStride = nkvh * hd + pad
                        let q = rng.floats(nq * nh * hd, scale: 2)
                        let k = rng.floats(nkv * kvStride, scale: 2), v = rng.floats(nkv * kvStride)
                        let scale = Float(1 / sqrt(Double(hd)))
                        var ref = [Float](repeating: .nan, count: nq * nh * hd)
                        mmk_attention_ref(&ref, q, k, v, Int64(nq), Int64(p0), Int64(nkv), Int32(nh), Int32(nkvh),
                                          Int32(hd), Int64(kvStride), scale)
                        for t: Int32 in [1, 2] {
                            var fast = [Float](repeating: .nan, count: ref.count)
                            mmk_attention(&fast, q, k, v, Int64(nq), Int64(p0), Int64(nkv), Int32(nh), Int32(nkvh),
                                          Int32(hd), Int64(kvStride), scale, t)
                            worst = max(worst, assertClose(fast, ref, rtol: 1e-5, atol: 2e-6, "attention nq=\(nq) p0=\(p0) nkv=\(nkv) h=\(nh)/\(nkvh) hd=\(hd)"))
                        }
                    }
                }
            }
        }
        print("attention fast vs ref: max abs diff \(worst)")
    }

    func testAttentionFullMatchesRef() {
        var rng = Rng(7)
        var worst: Float = 0
        for (nq, nkv) in [(1, 1), (5, 3), (17, 17), (40, 9)] {
            for nh in [1, 3] {
                for hd in [4, 19, 64] {
                    // rows padded differently for q, kv and out, as in a packed qkv projection
                    let qs = nh * hd + 5, kvs = nh * hd + 2, os = nh * hd + 1
                    let q = rng.floats(nq * qs), k = rng.floats(nkv * kvs), v = rng.floats(nkv * kvs)
                    var ref = [Float](repeating: 0, count: nq * os)
                    mmk_attention_full_ref(&ref, q, k, v, Int64(nq), Int64(nkv), Int32(nh), Int32(hd), Int64(qs), Int64(kvs), Int64(os), 0.3)
                    for t: Int32 in [1, 2] {
                        var fast = [Float](repeating: 0, count: nq * os)
                        mmk_attention_full(&fast, q, k, v, Int64(nq), Int64(nkv), Int32(nh), Int32(hd), Int64(qs), Int64(kvs), Int64(os), 0.3, t)
                        worst = max(worst, assertClose(fast, ref, rtol: 1e-5, atol: 2e-6, "attention_full nq=\(nq) nkv=\(nkv) h=\(nh) hd=\(hd)"))
                    }
                }
            }
        }
        print("attention_full fast vs ref: max abs diff \(worst)")
    }
}

// MARK: - activations, add, argmax

final class ElementwiseTests: XCTestCase {
    func testActivationsKnownValues() {
        var g: [Float] = [1, -1, 0, 20]
        mmk_silu_mul_ref(&g, [2, 2, 2, 0.5], 4)
        XCTAssertEqual(g[0], 2 * 0.7310585786, accuracy: 1e-6)    // silu(1) = sigmoid(1)
        XCTAssertEqual(g[1], -2 * 0.2689414214, accuracy: 1e-6)
        XCTAssertEqual(g[2], 0)
        XCTAssertEqual(g[3], 10, accuracy: 1e-5)
        var e: [Float] = [1, -1, 0, 3]
        mmk_gelu_erf_ref(&e, 4)
        XCTAssertEqual(e[0], 0.8413447461, accuracy: 1e-6)
        XCTAssertEqual(e[1], -0.1586552539, accuracy: 1e-6)
        XCTAssertEqual(e[2], 0)
        XCTAssertEqual(e[3], 2.9959502, accuracy: 1e-6)
        var t: [Float] = [1, -1, 0]
        mmk_gelu_tanh_ref(&t, 3)
        XCTAssertEqual(t[0], 0.8411919906, accuracy: 1e-6)
        XCTAssertEqual(t[1], -0.1588080094, accuracy: 1e-6)
        XCTAssertEqual(t[2], 0)
    }

    func testActivationsMatchRefAndDouble() {
        var rng = Rng(8)
        var worst: Float = 0
        for n in [1, 7, 33, 4097, 100_003] {
            let x = rng.floats(n, scale: 6), up = rng.floats(n)
            for th: Int32 in [1, 2] {
                var a = x, b = x
                mmk_silu_mul(&a, up, Int64(n), th)
                mmk_silu_mul_ref(&b, up, Int64(n))
                // The fast path uses a vector exp (a few ulp from libm's expf): close, not equal.
                worst = max(worst, assertClose(a, b, rtol: 2e-6, atol: 2e-7, "silu_mul fast vs ref"))
                let dbl = x.indices.map { Float(Double(x[$0]) / (1 + exp(-Double(x[$0]))) * Double(up[$0])) }
                worst = max(worst, assertClose(a, dbl, rtol: 1e-6, atol: 1e-7, "silu_mul vs double"))

                a = x; b = x
                mmk_gelu_erf(&a, Int64(n), th)
                mmk_gelu_erf_ref(&b, Int64(n))
                XCTAssertEqual(a, b, "gelu_erf n=\(n)")
                let ge = x.map { Float(0.5 * Double($0) * (1 + erf(Double($0) / 2.0.squareRoot()))) }
                worst = max(worst, assertClose(a, ge, rtol: 1e-6, atol: 1e-7, "gelu_erf vs double"))

                a = x; b = x
                mmk_gelu_tanh(&a, Int64(n), th)
                mmk_gelu_tanh_ref(&b, Int64(n))
                worst = max(worst, assertClose(a, b, rtol: 2e-6, atol: 2e-7, "gelu_tanh fast vs ref"))
                let gt = x.map { v -> Float in
                    let d = Double(v)
                    return Float(0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d))))
                }
                worst = max(worst, assertClose(a, gt, rtol: 1e-6, atol: 1e-7, "gelu_tanh vs double"))

                a = x
                mmk_add(&a, up, Int64(n), th)
                XCTAssertEqual(a, x.indices.map { x[$0] + up[$0] }, "add n=\(n)")
            }
        }
        print("activations vs float64 formulas: max abs diff \(worst)")
    }

    func testArgmax() {
        XCTAssertEqual(mmk_argmax([1, 3, 3, 2], 4), 1)                          // first on ties
        XCTAssertEqual(mmk_argmax([.nan, 1, .nan, 5, 5], 5), 3)                 // NaN ignored
        XCTAssertEqual(mmk_argmax([.nan, .nan], 2), 0)                          // all NaN
        XCTAssertEqual(mmk_argmax([-.infinity, -.infinity], 2), 0)
        XCTAssertEqual(mmk_argmax([-5, -2, -7], 3), 1)
        XCTAssertEqual(mmk_argmax([Float](), 0), -1)
        var rng = Rng(9)
        let x = rng.floats(32000)
        XCTAssertEqual(Int(mmk_argmax(x, 32000)), x.indices.max { x[$0] < x[$1] }!)
    }
}
