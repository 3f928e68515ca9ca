// The visualizer against golden data from tools/golden_visualizer.py (diffusers' own
// StableDiffusionPipeline, UNet2DConditionModel and AutoencoderKL on tiny random models; versions
// in Tests/Fixtures/visualizer/golden.json), plus the new kernels against their _ref twins.
import Foundation
import XCTest
import MetamorphCore
import MetamorphKernels
import MetamorphVisualizer

let vizRoot: String = {
    let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    return here.deletingLastPathComponent().appendingPathComponent("Fixtures/visualizer").path
}()

func npy(_ name: String) throws -> [Float] { try NPY.readFloat32(path: vizRoot + "/" + name).data }
func maxDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}
func golden() throws -> JSON {
    try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: vizRoot + "/golden.json"))), what: "golden.json")
}

final class VisualizerKernelTests: XCTestCase {
    func rnd(_ n: Int, _ seed: UInt64) -> [Float] { var g = LatentNoise(seed: seed); return g.normals(n) }

    func testConv2dMatchesReference() {
        for (cin, h, w, cout, k, stride, pad, f16) in [(3, 7, 5, 4, 3, 1, 1, false), (5, 8, 8, 6, 3, 2, 1, false), (4, 6, 6, 9, 1, 1, 0, false),
                                                       (4, 9, 7, 40, 3, 1, 1, true), (2, 5, 5, 3, 3, 2, 0, false), (64, 128, 128, 4, 3, 1, 1, false)] {
            let x = rnd(cin * h * w, 1), wt = rnd(cout * cin * k * k, 2), b = rnd(cout, 3)
            var wh = [UInt16](repeating: 0, count: wt.count)
            mmk_f32_to_f16(wt, &wh, Int64(wt.count))
            let oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1
            var y = [Float](repeating: 0, count: cout * oh * ow), r = y
            for th in [1, 2] {
                let rc: Int32 = f16 ? mmk_conv2d(1, wh, b, x, &y, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad), Int32(th))
                                    : mmk_conv2d(0, wt, b, x, &y, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad), Int32(th))
                XCTAssertEqual(rc, 0)
                if f16 { mmk_conv2d_ref(1, wh, b, x, &r, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad)) }
                else { mmk_conv2d_ref(0, wt, b, x, &r, Int32(cin), Int32(h), Int32(w), Int32(cout), Int32(k), Int32(k), Int32(stride), Int32(pad)) }
                XCTAssertLessThan(maxDiff(y, r), 1e-4, "conv \(cin)x\(h)x\(w) -> \(cout) k\(k) s\(stride) p\(pad)")
            }
        }
    }

    func testGroupNormUpsampleSiluTranspose() {
        let c = 12, hw = 35, x = rnd(c * hw, 4), g = rnd(c, 5), b = rnd(c, 6)
        for silu: Int32 in [0, 1] {
            var y = [Float](repeating: 0, count: x.count), r = y
            mmk_groupnorm(&y, x, g, b, Int32(c), Int64(hw), 4, 1e-5, silu, 2)
            mmk_groupnorm_ref(&r, x, g, b, Int32(c), Int64(hw), 4, 1e-5, silu)
            XCTAssertLessThan(maxDiff(y, r), 1e-5)
        }
        var u = [Float](repeating: 0, count: 4 * x.count), ur = u
        mmk_upsample_nearest2x(&u, x, Int32(c), 5, 7, 2)
        mmk_upsample_nearest2x_ref(&ur, x, Int32(c), 5, 7)
        XCTAssertEqual(u, ur)
        var s1 = x, s2 = x
        mmk_silu(&s1, Int64(x.count), 2); mmk_silu_ref(&s2, Int64(x.count))
        XCTAssertLessThan(maxDiff(s1, s2), 1e-6)   // vector exp: a few ulp from libm
        var t = [Float](repeating: 0, count: x.count)
        mmk_transpose(&t, x, Int64(c), Int64(hw), 2)
        XCTAssertEqual(t[5 * c + 3], x[3 * hw + 5])
    }

    func testAttentionGemmMatchesFull() {
        let nq = 300, nkv = 150, heads = 3, hd = 8, wd = heads * hd
        let q = rnd(nq * wd, 7), k = rnd(nkv * wd, 8), v = rnd(nkv * wd, 9)
        var o = [Float](repeating: 0, count: nq * wd), r = o
        mmk_attention_gemm(&o, q, k, v, Int64(nq), Int64(nkv), Int32(heads), Int32(hd), Int64(wd), Int64(wd), Int64(wd), 0.3, 2)
        mmk_attention_full_ref(&r, q, k, v, Int64(nq), Int64(nkv), Int32(heads), Int32(hd), Int64(wd), Int64(wd), Int64(wd), 0.3)
        XCTAssertLessThan(maxDiff(o, r), 1e-5)
    }
}

final class VisualizerParityTests: XCTestCase {
    static var shared: Visualizer? = nil
    func viz() throws -> Visualizer {
        if let v = VisualizerParityTests.shared { return v }
        let v = try Visualizer(directory: vizRoot + "/tiny")
        VisualizerParityTests.shared = v
        return v
    }

    func testAdapterMLP() throws {
        let v = try viz()
        let out = try v.adapter(try npy("visual_tokens.npy"), count: 64, threads: 2)
        let d = maxDiff(out, try npy("adapter_out.npy"))
        print("adapter mlp max diff \(d)")
        XCTAssertLessThan(d, 1e-4)
    }

    func testAdapterXAttnFFN() throws {
        let a = try Adapter(directory: vizRoot + "/adapter_xattnffn")
        let out = try a(try npy("visual_tokens.npy"), count: 64, threads: 2)
        let d = maxDiff(out, try npy("adapter_xattnffn_out.npy"))
        print("adapter xattnffn max diff \(d)")
        XCTAssertLessThan(d, 1e-4)
    }

    func testUNetSingleEvaluation() throws {
        let v = try viz()
        let t = Float(try golden()["unet_timestep"]!.double!)
        let out = try v.unet.forward(sample: try npy("unet_in.npy"), batch: 2, height: 8, width: 8, timestep: t,
                                     context: try npy("unet_ctx.npy"), contextLength: 77, threads: 2)
        let d = maxDiff(out, try npy("unet_out.npy"))
        print("unet max diff \(d)")
        XCTAssertLessThan(d, 1e-4)
    }

    func testVAEDecode() throws {
        let v = try viz()
        let out = try v.vae.decode(try npy("vae_in.npy"), batch: 1, height: 8, width: 8, threads: 2)
        let d = maxDiff(out, try npy("vae_out.npy"))
        print("vae max diff \(d)")
        XCTAssertLessThan(d, 1e-4)
    }

    func testSchedulerTimesteps() throws {
        let v = try viz()
        guard case .object(let runs, let names)? = try golden()["runs"] else { return XCTFail("no runs") }
        for n in names {
            let r = runs[n]!
            let s = try v.makeScheduler(n == "euler_trailing" ? "euler_trailing" : r["scheduler"]!.string!)
            try s.setTimesteps(r["steps"]!.int!)
            XCTAssertEqual(s.timesteps, r["timesteps"]!.array!.map { Float($0.double!) }, n)
        }
    }

    func testPipelines() throws {
        let v = try viz()
        let g = try golden()
        guard case .object(let runs, let names)? = g["runs"] else { return XCTFail("no runs") }
        let tokens = try npy("visual_tokens.npy"), lat = try npy("latents.npy")
        for n in names {
            let r = runs[n]!
            let sched = n == "euler_trailing" ? "euler_trailing" : r["scheduler"]!.string!
            var calls = 0
            let img = try v.render(visualTokens: tokens, count: 64, dim: 1152, steps: r["steps"]!.int!, guidance: Float(r["guidance"]!.double!),
                                   scheduler: sched, latents: lat, seed: 0, threads: 2, progress: { _, _ in calls += 1; return true })
            let ref = try npy("image_\(n).npy")
            let d = maxDiff(img.pixels, ref)
            var rgbMax = 0
            for i in 0..<ref.count {
                let q = Int((ref[i] * 255).rounded(.toNearestOrEven))
                rgbMax = max(rgbMax, abs(q - Int(img.rgb[i])))
            }
            print("pipeline \(n): float image max diff \(d), rgb8 max diff \(rgbMax) levels")
            XCTAssertEqual(img.width, 16); XCTAssertEqual(img.height, 16)
            XCTAssertEqual(calls, r["timesteps"]!.array!.count)
            XCTAssertLessThan(d, 1e-4, n)
            XCTAssertLessThanOrEqual(rgbMax, 1, n)
        }
    }

    func testCancelAndSeededNoise() throws {
        let v = try viz()
        let tokens = try npy("visual_tokens.npy")
        XCTAssertThrowsError(try v.render(visualTokens: tokens, count: 64, dim: 1152, steps: 3, guidance: 7.5, scheduler: nil,
                                          latents: nil, seed: 1, threads: 1, progress: { i, _ in i < 2 })) { e in
            XCTAssertEqual((e as? MMError)?.code, .cancelled)
        }
        let a = try v.render(visualTokens: tokens, count: 64, dim: 1152, steps: 2, guidance: 7.5, scheduler: "ddim", latents: nil, seed: 5, threads: 1, progress: nil)
        let b = try v.render(visualTokens: tokens, count: 64, dim: 1152, steps: 2, guidance: 7.5, scheduler: "ddim", latents: nil, seed: 5, threads: 2, progress: nil)
        XCTAssertEqual(a.rgb.count, 16 * 16 * 3)
        XCTAssertLessThanOrEqual(zip(a.rgb, b.rgb).map { abs(Int($0) - Int($1)) }.max()!, 1)
        var n = LatentNoise(seed: 3)
        let z = n.normals(20000)
        let mean = z.reduce(0, +) / Float(z.count), varc = z.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(z.count)
        XCTAssertLessThan(abs(mean), 0.03); XCTAssertLessThan(abs(varc - 1), 0.05)
        XCTAssertThrowsError(try v.makeScheduler("../x"))
        XCTAssertThrowsError(try v.makeScheduler("nosuch"))
    }
}
