// mmk_attention_tiled (attention_tiled.c) against the float64-accumulating reference
// mmk_attention_full_ref: query blocks with tails (n_q not a multiple of 60), key chunks with
// tails (n_kv not a multiple of 16 or 256), the head widths the visualizer uses (40, 80, 160 in
// SD1.5; 64 and 512 in VAEs) and ones it must hand to the sgemm path (4, 12), strided rows,
// 1 and 2 threads, large score ranges (the online softmax rescales), and NaN propagation.
import Foundation
import MetamorphKernels
import XCTest

final class AttentionTiledTests: XCTestCase {
    func run(nq: Int, nkv: Int, heads: Int, hd: Int, scaleUp: Float, seed: UInt64) -> Float {
        // float32 scores carry ~1e-7 relative error; a peaked softmax turns score error e into
        // output error ~e: at scores of +-40 (scaleUp 6) that is ~4e-6, measured 4.5e-6.
        let atol: Float = scaleUp > 1 ? 2e-5 : 2e-6
        var rng = Rng(seed)
        let qs = heads * hd + 3, kvs = heads * hd + 1, os = heads * hd + 2
        let q = rng.floats(nq * qs, scale: scaleUp), k = rng.floats(nkv * kvs, scale: scaleUp), v = rng.floats(nkv * kvs)
        let scale = 1 / Float(hd).squareRoot()
        var ref = [Float](repeating: 0, count: nq * os)
        mmk_attention_full_ref(&ref, q, k, v, Int64(nq), Int64(nkv), Int32(heads), Int32(hd), Int64(qs), Int64(kvs), Int64(os), scale)
        var worst: Float = 0
        for t: Int32 in [1, 2] {
            var out = [Float](repeating: .nan, count: nq * os)
            // Padding columns between rows must stay untouched: start them at a sentinel.
            for i in 0..<nq { for c in heads * hd..<os { out[i * os + c] = 7 } }
            mmk_attention_tiled(&out, q, k, v, Int64(nq), Int64(nkv), Int32(heads), Int32(hd), Int64(qs), Int64(kvs), Int64(os), scale, t)
            for i in 0..<nq { for c in heads * hd..<os { XCTAssertEqual(out[i * os + c], 7, "row padding written") } }
            for i in 0..<nq { for c in heads * hd..<os { out[i * os + c] = 0 } }
            // Outputs are convex combinations of v (|v| < 1): absolute error is the natural measure.
            worst = max(worst, assertClose(out, ref, rtol: 0, atol: atol, "tiled nq=\(nq) nkv=\(nkv) h=\(heads) hd=\(hd) t=\(t)"))
        }
        return worst
    }

    func testMatchesReference() {
        var worst: Float = 0
        var seed: UInt64 = 1
        // (n_q, n_kv, heads, head_dim, score scale)
        let cases: [(Int, Int, Int, Int, Float)] = [
            (1, 1, 1, 8, 1), (7, 5, 2, 8, 1), (60, 256, 1, 40, 1), (61, 257, 2, 40, 1), (130, 77, 8, 40, 1),
            (256, 600, 2, 80, 1), (64, 300, 1, 160, 1), (100, 513, 1, 64, 1), (33, 40, 1, 512, 1),
            (90, 700, 3, 40, 6),  // scores spanning about +-40: late chunks carry new maxima
            (20, 30, 2, 4, 1), (45, 50, 2, 12, 1),  // widths not a multiple of 8: the sgemm path
        ]
        for (nq, nkv, h, hd, s) in cases {
            worst = max(worst, run(nq: nq, nkv: nkv, heads: h, hd: hd, scaleUp: s, seed: seed))
            seed += 1
        }
        print("attention_tiled vs ref: max abs diff \(worst)")
    }

    /// Agrees with the two-sgemm path, and METAMORPH_ATTENTION=gemm routes to that path exactly.
    func testAgreesWithSgemmPathAndOverride() {
        var rng = Rng(42)
        let nq = 150, nkv = 333, h = 2, hd = 40, w = h * hd
        let q = rng.floats(nq * w), k = rng.floats(nkv * w), v = rng.floats(nkv * w)
        var a = [Float](repeating: 0, count: nq * w), b = a, c = a
        mmk_attention_tiled(&a, q, k, v, Int64(nq), Int64(nkv), Int32(h), Int32(hd), Int64(w), Int64(w), Int64(w), 0.2, 2)
        mmk_attention_gemm(&b, q, k, v, Int64(nq), Int64(nkv), Int32(h), Int32(hd), Int64(w), Int64(w), Int64(w), 0.2, 2)
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 2e-6)
        XCTAssertNotEqual(a, b, "the tiled path rounds differently from sgemm: equal bits would mean it did not run")
        let old = ProcessInfo.processInfo.environment["METAMORPH_ATTENTION"]
        setenv("METAMORPH_ATTENTION", "gemm", 1)
        defer { if let old { setenv("METAMORPH_ATTENTION", old, 1) } else { unsetenv("METAMORPH_ATTENTION") } }
        mmk_attention_tiled(&c, q, k, v, Int64(nq), Int64(nkv), Int32(h), Int32(hd), Int64(w), Int64(w), Int64(w), 0.2, 2)
        XCTAssertEqual(c, b)
    }

    func testNaNAndInfinityPropagateToTheirRows() {
        var rng = Rng(3)
        let nq = 70, nkv = 300, hd = 16
        var q = rng.floats(nq * hd)
        let k = rng.floats(nkv * hd), v = rng.floats(nkv * hd)
        q[5 * hd + 3] = .nan        // row 5: NaN scores against every key
        q[64 * hd] = .infinity      // row 64 (second block): infinite scores
        var out = [Float](repeating: 0, count: nq * hd)
        mmk_attention_tiled(&out, q, k, v, Int64(nq), Int64(nkv), 1, Int32(hd), Int64(hd), Int64(hd), Int64(hd), 0.25, 1)
        for i in 0..<nq {
            let row = out[i * hd..<(i + 1) * hd]
            if i == 5 || i == 64 {
                XCTAssertTrue(row.allSatisfy { $0.isNaN }, "row \(i) should be NaN")
            } else {
                XCTAssertTrue(row.allSatisfy { $0.isFinite }, "row \(i) should be finite")
            }
        }
    }
}

/// The fused GEGLU (UNet feed-forward) against its one-row reference and a hand value.
final class GegluTests: XCTestCase {
    func testMatchesReferenceAndDefinition() {
        // hidden 2, gate 1: 2 * gelu(1) = 2 * 0.8413447 (gelu(1) = Phi(1))
        var one: [Float] = [0]
        mmk_geglu(&one, [2, 1], 1, 1, 1)
        XCTAssertEqual(one[0], 2 * 0.8413447461, accuracy: 1e-6)
        var rng = Rng(9)
        let rows = 300, inner = 163  // 163: a scalar tail after the vectors
        let proj = rng.floats(rows * 2 * inner, scale: 4)
        var ref = [Float](repeating: 0, count: rows * inner)
        mmk_geglu_ref(&ref, proj, Int64(rows), Int64(inner))
        var worst: Float = 0
        for t: Int32 in [1, 2] {
            var out = [Float](repeating: .nan, count: rows * inner)
            mmk_geglu(&out, proj, Int64(rows), Int64(inner), t)
            for r in 0..<rows { for j in 0..<inner {
                // vector erf within 3.9e-7: |error| <= 0.5 |gate| |hidden| 3.9e-7 plus float rounding
                let h = proj[r * 2 * inner + j], g = proj[r * 2 * inner + inner + j], i = r * inner + j
                let bound = 2e-7 * abs(h) * (1 + abs(g)) + 2e-7 * abs(ref[i]) + 1e-12
                worst = max(worst, abs(out[i] - ref[i]))
                if abs(out[i] - ref[i]) > bound { XCTFail("geglu \(r),\(j): \(out[i]) vs \(ref[i])"); return }
            } }
        }
        print("geglu fast vs ref: max abs diff \(worst)")
        // and the reference is hidden * gelu_erf(gate) as mmk_gelu_erf_ref computes it
        var gate = (0..<inner).map { proj[2 * inner + inner + $0] }
        mmk_gelu_erf_ref(&gate, Int64(inner))
        for j in 0..<inner { XCTAssertEqual(ref[inner + j], proj[2 * inner + j] * gate[j]) }
    }
}

