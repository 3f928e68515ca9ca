// Per-step latent parity: the engine's denoising loop against diffusers' latents after every
// scheduler step (steps_<run>.npy from tools/golden_visualizer.py, callback_on_step_end), plus
// the final image within 2/255 per channel.
import Foundation
import XCTest
import MetamorphCore
import MetamorphVisualizer

final class VisualizerStepTests: XCTestCase {
    func testPipelineLatentsPerStep() throws {
        let v = try Visualizer(directory: vizRoot + "/tiny")
        guard case .object(let runs, let names)? = try golden()["runs"] else { return XCTFail("no runs") }
        let tokens = try npy("visual_tokens.npy"), lat = try npy("latents.npy")
        let cond = try v.condition(visualTokens: tokens, count: 64, dim: 1152, threads: 2)
        let per = lat.count
        for n in names {
            let r = runs[n]!
            let sched = n == "euler_trailing" ? "euler_trailing" : r["scheduler"]!.string!
            let (shape, ref) = try NPY.readFloat32(path: vizRoot + "/steps_\(n).npy")
            let nSteps = r["timesteps"]!.array!.count
            XCTAssertEqual(shape, [nSteps, 4, 8, 8], n)
            var diffs: [Float] = []
            var scales: [Float] = []   // largest |latent| of each reference step
            let x = try v.denoise(condition: cond, latents: lat, steps: r["steps"]!.int!, guidance: Float(r["guidance"]!.double!),
                                  scheduler: sched, threads: 2, progress: nil, onStep: { i, cur in
                XCTAssertEqual(i, diffs.count, n)
                guard i < nSteps, cur.count == per else { return XCTFail("\(n): step \(i), \(cur.count) latents") }
                let r = Array(ref[(i * per)..<((i + 1) * per)])
                diffs.append(maxDiff(cur, r))
                scales.append(r.map { abs($0) }.max() ?? 0)
            })
            let worst = diffs.max() ?? .nan
            print("pipeline \(n): largest latent difference per step: \(diffs) (max \(worst))")
            XCTAssertEqual(diffs.count, nSteps, n)
            // 1e-4 relative to the step's magnitude: Euler latents start at init_noise_sigma (~14.6)
            // times unit noise, so their float32 rounding is an order larger in absolute terms.
            for (i, d) in diffs.enumerated() { XCTAssertLessThan(d, 1e-4 * max(1, scales[i]), "\(n) step \(i)") }

            // the final image: within 2/255 per channel of diffusers'
            let img = try v.decode(latents: x, threads: 2)
            let pix = try npy("image_\(n).npy")
            XCTAssertEqual(img.pixels.count, pix.count, n)
            let d = maxDiff(img.pixels, pix)
            var rgbMax = 0
            for i in 0..<pix.count {
                rgbMax = max(rgbMax, abs(Int((pix[i] * 255).rounded(.toNearestOrEven)) - Int(img.rgb[i])))
            }
            print("pipeline \(n): final image max diff \(d) (\(d * 255) / 255), rgb8 max diff \(rgbMax) levels")
            XCTAssertLessThanOrEqual(d, 2.0 / 255, n)
            XCTAssertLessThanOrEqual(rgbMax, 2, n)
        }
    }
}
