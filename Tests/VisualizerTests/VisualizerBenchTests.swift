// Env-gated benchmark used by tools/bench_visualizer.py: one SD1.5-shaped UNet evaluation
// (batch 2 for guidance, 64x64 latent, 77-row condition) and one VAE decode to 512x512 on a
// random-weight checkpoint. Skipped unless MM_VIZ_BENCH_DIR is set (a directory with unet/ and
// vae/ in diffusers format). Prints one "bench: ..." line per measurement.
import Foundation
import XCTest
import MetamorphCore
import MetamorphVisualizer

final class VisualizerBenchTests: XCTestCase {
    func peakRSSMB() -> Double {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Double(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.flatMap { Double($0) } ?? 0) / 1024
        }
        return 0
    }

    func testSD15Bench() throws {
        let env = ProcessInfo.processInfo.environment
        guard let dir = env["MM_VIZ_BENCH_DIR"] else { throw XCTSkip("MM_VIZ_BENCH_DIR not set") }
        let threads = (env["MM_VIZ_BENCH_THREADS"] ?? "1,2").split(separator: ",").compactMap { Int($0) }
        let what = env["MM_VIZ_BENCH_WHAT"] ?? "unet,vae"
        var g = LatentNoise(seed: 1)
        if what.contains("unet") {
            let t0 = Date()
            let unet = try UNet(directory: dir + "/unet")
            print("bench: unet_load_s=\(Date().timeIntervalSince(t0))")
            let c = unet.config, s = c.sampleSize
            let x = g.normals(2 * c.inChannels * s * s), ctx = g.normals(2 * 77 * c.crossAttentionDim)
            for th in threads {
                let t = Date()
                let y = try unet.forward(sample: x, batch: 2, height: s, width: s, timestep: 500, context: ctx, contextLength: 77, threads: th)
                let dt = Date().timeIntervalSince(t)
                XCTAssertFalse(y.contains { !$0.isFinite })
                print("bench: unet threads=\(th) seconds=\(dt) peak_rss_mb=\(peakRSSMB())")
            }
        }
        if what.contains("vae") {
            let vae = try VAEDecoder(directory: dir + "/vae")
            let z = g.normals(4 * 64 * 64)
            for th in threads {
                let t = Date()
                let y = try vae.decode(z, batch: 1, height: 64, width: 64, threads: th)
                let dt = Date().timeIntervalSince(t)
                XCTAssertEqual(y.count, 3 * 512 * 512)
                print("bench: vae threads=\(th) seconds=\(dt) peak_rss_mb=\(peakRSSMB())")
            }
        }
    }
}
