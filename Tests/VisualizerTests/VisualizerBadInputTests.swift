// Bad input to the visualizer: a clear MMError naming the problem, never a crash or a NaN picture.
import Foundation
import XCTest
import MetamorphCore
@testable import MetamorphVisualizer

final class VisualizerBadInputTests: XCTestCase {
    static let viz: Visualizer? = try? Visualizer(directory: vizRoot + "/tiny")

    func expect(_ code: MMError.Code, _ needle: String, _ body: () throws -> Void, line: UInt = #line) {
        do { try body(); XCTFail("expected an error containing \"\(needle)\"", line: line) } catch let e as MMError {
            XCTAssertEqual(e.code, code, e.message, line: line)
            XCTAssertTrue(e.message.contains(needle), "\"\(e.message)\" lacks \"\(needle)\"", line: line)
        } catch { XCTFail("\(error)", line: line) }
    }

    func tokens() throws -> (data: [Float], count: Int, dim: Int) {
        let t = try NPY.readFloat32(path: vizRoot + "/visual_tokens.npy")
        let dim = t.shape.last!
        return (t.data, t.data.count / dim, dim)
    }

    func render(_ v: Visualizer, _ data: [Float], count: Int, dim: Int, steps: Int = 2, guidance: Float = 7.5,
                scheduler: String? = nil, latents: [Float]? = nil) throws {
        _ = try v.render(visualTokens: data, count: count, dim: dim, steps: steps, guidance: guidance, scheduler: scheduler,
                         latents: latents, seed: 1, threads: 1, progress: nil)
    }

    func testWrongWidthOrCountOfTokens() throws {
        let v = try XCTUnwrap(Self.viz)
        let t = try tokens()
        expect(.invalidArgument, "adapter expects") { try render(v, [Float](repeating: 0, count: 64 * 7), count: 64, dim: 7) }
        expect(.invalidArgument, "is not") { try render(v, Array(t.data.dropLast()), count: t.count, dim: t.dim) }
        expect(.invalidArgument, "fit the condition") {
            try render(v, [Float](repeating: 0.1, count: 200 * t.dim), count: 200, dim: t.dim)
        }
    }

    func testNaNAndInfinity() throws {
        let v = try XCTUnwrap(Self.viz)
        var t = try tokens()
        t.data[5] = .nan
        expect(.invalidArgument, "NaN or infinite") { try render(v, t.data, count: t.count, dim: t.dim) }
        t.data[5] = .infinity
        expect(.invalidArgument, "NaN or infinite") { try render(v, t.data, count: t.count, dim: t.dim) }
        let ok = try tokens()
        var lat = [Float](repeating: 0, count: v.latentChannels * v.latentSize * v.latentSize)
        lat[0] = -.infinity
        expect(.invalidArgument, "latent value 0") { try render(v, ok.data, count: ok.count, dim: ok.dim, latents: lat) }
        expect(.invalidArgument, "latents") { try render(v, ok.data, count: ok.count, dim: ok.dim, latents: [1, 2, 3]) }
        expect(.invalidArgument, "guidance") { try render(v, ok.data, count: ok.count, dim: ok.dim, guidance: .nan) }
    }

    func testStepCountsAndSchedulers() throws {
        let v = try XCTUnwrap(Self.viz)
        let t = try tokens()
        expect(.invalidArgument, "steps") { try render(v, t.data, count: t.count, dim: t.dim, steps: 0) }
        expect(.invalidArgument, "steps") { try render(v, t.data, count: t.count, dim: t.dim, steps: 1_000_000) }
        expect(.invalidArgument, "scheduler") { try render(v, t.data, count: t.count, dim: t.dim, scheduler: "warp-drive") }
        expect(.invalidArgument, "scheduler") { try render(v, t.data, count: t.count, dim: t.dim, scheduler: "../unet") }
    }

    func testMissingSubfolderOrTensorAndUnknownSchedulerType() throws {
        let tmp = NSTemporaryDirectory() + "viz-bad-\(UUID().uuidString)"
        let fm = FileManager.default
        try fm.copyItem(atPath: vizRoot + "/tiny", toPath: tmp)
        defer { try? fm.removeItem(atPath: tmp) }
        // Unknown scheduler class.
        let sc = tmp + "/scheduler/scheduler_config.json"
        let orig = try String(contentsOfFile: sc, encoding: .utf8)
        try orig.replacingOccurrences(of: "Scheduler\"", with: "WarpScheduler\"").write(toFile: sc, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Visualizer(directory: tmp)) { e in XCTAssertTrue("\(e)".contains("not supported"), "\(e)") }
        try orig.write(toFile: sc, atomically: true, encoding: .utf8)
        // A tensor missing from the VAE.
        let vae = tmp + "/vae/diffusion_pytorch_model.safetensors"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: vae))
        try bytes.prefix(64).write(to: URL(fileURLWithPath: vae))
        XCTAssertThrowsError(try Visualizer(directory: tmp)) { e in XCTAssertTrue("\(e)".contains("vae") || "\(e)".contains("safetensors"), "\(e)") }
        try bytes.write(to: URL(fileURLWithPath: vae))
        // A missing subfolder.
        try fm.removeItem(atPath: tmp + "/unet")
        XCTAssertThrowsError(try Visualizer(directory: tmp)) { e in XCTAssertTrue("\(e)".contains("unet"), "\(e)") }
    }
}
