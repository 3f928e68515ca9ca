// Winograd F(2x2, 3x3) convolution (mmk_conv2d_winograd3x3[_batch]) against the direct float64
// reference mmk_conv2d_ref, and against the im2col path on shapes too large for the reference
// that exercise several chunks of tile rows and several blocks of output channels. Also the
// dispatch of mmk_conv2d / mmk_conv2d_batch and the METAMORPH_CONV override.
import Foundation
import MetamorphKernels
import XCTest

/// max |a - b| / max |b|: Winograd's rounding error scales with the magnitudes summed, so it is
/// judged relative to the largest output, not elementwise.
func relMaxDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var d: Float = 0, m: Float = 0
    for i in a.indices { d = max(d, abs(a[i] - b[i])); m = max(m, abs(b[i])) }
    return m > 0 ? d / m : d
}

/// Runs body with METAMORPH_CONV set to value (nil: unset), then restores the previous value.
func withConvMode<R>(_ value: String?, _ body: () -> R) -> R {
    let old = ProcessInfo.processInfo.environment["METAMORPH_CONV"]
    if let value { setenv("METAMORPH_CONV", value, 1) } else { unsetenv("METAMORPH_CONV") }
    defer { if let old { setenv("METAMORPH_CONV", old, 1) } else { unsetenv("METAMORPH_CONV") } }
    return body()
}

final class ConvWinogradTests: XCTestCase {
    /// Tolerance on relMaxDiff. Inputs and weights are uniform in [-1, 1) (weights scaled by
    /// 1/sqrt(9 cin) like a trained layer), so outputs are O(1) and float32 sums of up to
    /// 9 * 300 products carry ~1e-7 relative error; Winograd's transforms (adds, subtracts,
    /// halvings) measured 4.7e-7 at most here. 5e-6 leaves a 10x margin while catching any indexing
    /// mistake (a wrong or missing term is an O(1e-2) error or worse).
    let tol: Float = 5e-6

    func problem(cin: Int, cout: Int, h: Int, w: Int, nimg: Int, dtype: Int32, bias: Bool, seed: UInt64)
        -> (x: [Float], wt: Weights, b: [Float]?) {
        var rng = Rng(seed)
        let x = rng.floats(nimg * cin * h * w)
        let wt = Weights(dtype, rng.floats(cout * cin * 9, scale: 1 / Float(9 * cin).squareRoot()))
        return (x, wt, bias ? rng.floats(cout) : nil)
    }

    func reference(_ p: (x: [Float], wt: Weights, b: [Float]?), cin: Int, cout: Int, h: Int, w: Int, nimg: Int) -> [Float] {
        var r = [Float](repeating: 0, count: nimg * cout * h * w)
        let img = cin * h * w, oimg = cout * h * w
        p.wt.bytes.withUnsafeBytes { wb in
            withOptional(p.b) { b in
                p.x.withUnsafeBufferPointer { xp in
                    r.withUnsafeMutableBufferPointer { rp in
                        for i in 0..<nimg {
                            mmk_conv2d_ref(p.wt.dtype, wb.baseAddress, b, xp.baseAddress! + i * img, rp.baseAddress! + i * oimg,
                                           Int32(cin), Int32(h), Int32(w), Int32(cout), 3, 3, 1, 1)
                        }
                    }
                }
            }
        }
        return r
    }

    func winograd(_ p: (x: [Float], wt: Weights, b: [Float]?), cin: Int, cout: Int, h: Int, w: Int, nimg: Int, threads: Int)
        -> [Float] {
        var y = [Float](repeating: .nan, count: nimg * cout * h * w)
        let rc: Int32 = p.wt.bytes.withUnsafeBytes { wb in
            withOptional(p.b) { b in
                nimg == 1
                    ? mmk_conv2d_winograd3x3(p.wt.dtype, wb.baseAddress, b, p.x, &y, Int32(cin), Int32(cout), Int32(h), Int32(w),
                                             Int32(threads))
                    : mmk_conv2d_winograd3x3_batch(p.wt.dtype, wb.baseAddress, b, p.x, &y, Int32(nimg), Int32(cin), Int32(cout),
                                                   Int32(h), Int32(w), Int32(threads))
            }
        }
        XCTAssertEqual(rc, 0)
        return y
    }

    /// Odd and even sizes (partial edge tiles), 1x1 / 1xN maps, channel counts that are not
    /// multiples of 8, one output channel, several images, all weight dtypes, 1 and 2 threads.
    func testMatchesReference() {
        let shapes: [(cin: Int, cout: Int, h: Int, w: Int, nimg: Int)] = [
            (1, 1, 1, 1, 1), (3, 5, 1, 7, 1), (2, 3, 6, 1, 1), (5, 7, 7, 5, 1), (13, 11, 9, 10, 2),
            (37, 29, 15, 17, 1), (64, 1, 12, 12, 1), (20, 45, 33, 31, 3), (300, 70, 8, 9, 2),
        ]
        var worst: [String: Float] = [:]
        for (n, s) in shapes.enumerated() {
            for dtype in allDtypes {
                let p = problem(cin: s.cin, cout: s.cout, h: s.h, w: s.w, nimg: s.nimg, dtype: dtype, bias: n % 3 != 1,
                                seed: UInt64(100 + n))
                let r = reference(p, cin: s.cin, cout: s.cout, h: s.h, w: s.w, nimg: s.nimg)
                for th in [1, 2] {
                    let y = winograd(p, cin: s.cin, cout: s.cout, h: s.h, w: s.w, nimg: s.nimg, threads: th)
                    let d = relMaxDiff(y, r)
                    worst[dtypeName(dtype)] = max(worst[dtypeName(dtype)] ?? 0, d)
                    XCTAssertLessThanOrEqual(d, tol, "\(s) \(dtypeName(dtype)) threads \(th)")
                }
            }
        }
        print("winograd vs mmk_conv2d_ref, relative max diff: " + worst.keys.sorted().map { "\($0) \(worst[$0]!)" }.joined(separator: ", "))
    }

    /// Shapes that make the kernel use several chunks of tile rows (large maps), several blocks
    /// of output channels per thread (cin * cout / threads > 262144 floats of transformed
    /// weights), and both at once (weights re-transformed for every chunk); checked against the
    /// im2col path, itself checked against the reference elsewhere.
    func testChunksAndBlocksMatchIm2col() {
        let shapes: [(cin: Int, cout: Int, h: Int, w: Int, nimg: Int, dtype: Int32)] = [
            (16, 9, 301, 299, 1, F32),      // 3-4 chunks of tile rows
            (1100, 500, 5, 7, 1, F16),      // 2-3 blocks of output channels, one chunk
            (1100, 300, 49, 40, 1, F32),    // blocks and 3 chunks (1 thread; 2 threads: one block each)
            (1100, 300, 37, 40, 1, F32),    // blocks: two chunks' worth merged into one
            (520, 260, 40, 41, 2, BF16),    // one block per thread, chunks spanning both images
        ]
        var worst: Float = 0
        for (n, s) in shapes.enumerated() {
            let p = problem(cin: s.cin, cout: s.cout, h: s.h, w: s.w, nimg: s.nimg, dtype: s.dtype, bias: true, seed: UInt64(200 + n))
            var r = [Float](repeating: 0, count: s.nimg * s.cout * s.h * s.w)
            let rc = withConvMode("im2col") {
                p.wt.bytes.withUnsafeBytes { wb in
                    mmk_conv2d_batch(s.dtype, wb.baseAddress, p.b!, p.x, &r, Int32(s.nimg), Int32(s.cin), Int32(s.h), Int32(s.w),
                                     Int32(s.cout), 3, 3, 1, 1, 2)
                }
            }
            XCTAssertEqual(rc, 0)
            for th in [1, 2] {
                let y = winograd(p, cin: s.cin, cout: s.cout, h: s.h, w: s.w, nimg: s.nimg, threads: th)
                let d = relMaxDiff(y, r)
                worst = max(worst, d)
                XCTAssertLessThanOrEqual(d, tol, "\(s) threads \(th)")
            }
        }
        print("winograd vs im2col (chunked / blocked shapes), relative max diff: \(worst)")
    }

    /// mmk_conv2d and mmk_conv2d_batch pick Winograd or im2col by shape (or METAMORPH_CONV);
    /// every choice must give the reference's answer, and the batch must equal per-image calls.
    func testDispatchAndOverride() {
        let (cin, cout, h, w, nimg) = (70, 24, 17, 18, 2)   // large enough for the Winograd rule
        let p = problem(cin: cin, cout: cout, h: h, w: w, nimg: nimg, dtype: F16, bias: true, seed: 300)
        let r = reference(p, cin: cin, cout: cout, h: h, w: w, nimg: nimg)
        var outs: [[Float]] = []
        for mode in [nil, "im2col", "winograd"] {
            var y = [Float](repeating: .nan, count: r.count), yi = y
            withConvMode(mode) {
                p.wt.bytes.withUnsafeBytes { wb in
                    XCTAssertEqual(mmk_conv2d_batch(F16, wb.baseAddress, p.b!, p.x, &y, Int32(nimg), Int32(cin), Int32(h), Int32(w),
                                                    Int32(cout), 3, 3, 1, 1, 2), 0)
                    p.x.withUnsafeBufferPointer { xp in
                        yi.withUnsafeMutableBufferPointer { yp in
                            for i in 0..<nimg {
                                XCTAssertEqual(mmk_conv2d(F16, wb.baseAddress, p.b!, xp.baseAddress! + i * cin * h * w,
                                                          yp.baseAddress! + i * cout * h * w, Int32(cin), Int32(h), Int32(w),
                                                          Int32(cout), 3, 3, 1, 1, 1), 0)
                            }
                        }
                    }
                }
            }
            XCTAssertLessThanOrEqual(relMaxDiff(y, r), tol, "batch, METAMORPH_CONV=\(mode ?? "unset")")
            XCTAssertLessThanOrEqual(relMaxDiff(yi, r), tol, "per image, METAMORPH_CONV=\(mode ?? "unset")")
            outs.append(y)
        }
        // im2col and Winograd round differently: the override must really switch the algorithm.
        XCTAssertNotEqual(outs[1], outs[2])
        XCTAssertEqual(outs[0], outs[2], "this shape takes Winograd by default")
        // Strided 3x3 and 1x1 convolutions never take Winograd, even when forced.
        for (k, stride, pad) in [(3, 2, 1), (1, 1, 0), (3, 1, 0)] {
            let oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1
            var rng = Rng(301)
            let wt = rng.floats(cout * cin * k * k, scale: 0.1)
            var y = [Float](repeating: 0, count: cout * oh * ow), ref = y
            withConvMode("winograd") {
                XCTAssertEqual(mmk_conv2d(F32, wt, nil, p.x, &y, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k),
                                          Int32(stride), Int32(pad), 2), 0)
            }
            mmk_conv2d_ref(F32, wt, nil, p.x, &ref, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad))
            XCTAssertLessThanOrEqual(relMaxDiff(y, ref), tol, "k\(k) s\(stride) p\(pad)")
        }
    }

    func testBadArguments() {
        var y = [Float](repeating: 0, count: 16)
        let w = [Float](repeating: 0, count: 9), x = [Float](repeating: 0, count: 16)
        XCTAssertEqual(mmk_conv2d_winograd3x3(7, w, nil, x, &y, 1, 1, 4, 4, 1), -1)     // unknown dtype
        XCTAssertEqual(mmk_conv2d_winograd3x3(F32, w, nil, x, &y, 0, 1, 4, 4, 1), -1)   // no channels
        XCTAssertEqual(mmk_conv2d_winograd3x3(F32, w, nil, x, &y, 1, 1, 0, 4, 1), -1)   // empty map
        XCTAssertEqual(mmk_conv2d_winograd3x3_batch(F32, w, nil, x, &y, 0, 1, 1, 4, 4, 1), -1)
        XCTAssertEqual(mmk_conv2d_batch(F32, w, nil, x, &y, 0, 1, 4, 4, 1, 3, 3, 1, 1, 1), -1)
        XCTAssertEqual(mmk_conv2d_batch(F32, w, nil, x, &y, 1, 1, 4, 4, 1, 3, 3, 0, 1, 1), -1)   // stride 0
        XCTAssertEqual(mmk_conv2d_winograd3x3(F32, w, nil, x, &y, 1, 1, 4, 4, 0), 0)    // nthreads <= 0 means 1
    }
}
