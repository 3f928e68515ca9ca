// Image understanding end to end against tools/golden_understanding.py (transformers'
// SiglipVisionModel + SiglipImageProcessor, MetaMorph's reduction/normalisation/projector,
// LlamaForCausalLM, no-cache greedy loop): identical prompt ids and greedy ids with 0, 1, 2 images.
import Foundation
import XCTest
import MetamorphCore
import MetamorphRuntime

/// An 8-bit HxWx3 .npy written by numpy.
func readNpyRGB(_ path: String) throws -> ImageInput {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    let hlen = Int(bytes[8]) | Int(bytes[9]) << 8
    let header = String(decoding: bytes[10..<10 + hlen], as: UTF8.self)
    guard header.contains("|u1"), let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
        throw MMError.format("\(path): not a uint8 array: \(header)")
    }
    let dims = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard dims.count == 3, dims[2] == 3 else { throw MMError.format("\(path): shape \(dims) is not HxWx3") }
    return ImageInput(width: dims[1], height: dims[0], rgb: Array(bytes[(10 + hlen)...]))
}

final class ImageUnderstandingTests: XCTestCase {
    func testGreedyIdsWithZeroOneTwoImages() throws {
        let dir = Paths.repo + "/Tests/Fixtures/golden_understanding"
        let golden = try loadJSON(dir + "/golden.json")
        var opts = LoadOptions()
        opts.visionTowerPath = Paths.repo + "/Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x"
        let model = try Model.load(directory: Paths.checkpoint("mm-f32"), options: opts)
        XCTAssertNotNil(model.vision)
        for c in golden["cases"]?.array ?? [] {
            var parts: [PromptPart] = []
            for f in c["images"]?.array ?? [] { parts.append(.image(try readNpyRGB(dir + "/" + f.string!))) }
            parts.append(.text(c["question"]!.string!))
            let expectedPrompt = (c["prompt_ids"]?.array ?? []).compactMap { $0.int.map(Int32.init) }
            let expected = (c["greedy_ids"]?.array ?? []).compactMap { $0.int.map(Int32.init) }
            var p = GenerationParams(); p.maxTokens = expected.count; p.ignoreEOS = true
            let r = try Session(model: model, threads: 2).generate(parts, params: p)
            XCTAssertEqual(r.promptTokens, expectedPrompt, "\(parts.count - 1) images: prompt ids")
            XCTAssertEqual(r.tokens, expected, "\(parts.count - 1) images: greedy ids")
            XCTAssertEqual(r.timings.promptTokens, expectedPrompt.count + (parts.count - 1) * 3, "each image is 4 positions, not 1")
        }
    }

    func testImagesWithoutTowerOrWithTextOnlyModelFailClearly() throws {
        let img = ImageInput(width: 2, height: 2, rgb: [UInt8](repeating: 100, count: 12))
        let noTower = try Model.load(directory: Paths.checkpoint("mm-f32"))
        XCTAssertThrowsError(try Session(model: noTower, threads: 1).generate([.image(img), .text("hi")], params: GenerationParams())) { e in
            XCTAssertTrue("\(e)".contains("no SigLIP weights"), "\(e)")
        }
        let textOnly = try Model.load(directory: Paths.checkpoint("llama-f16"))
        XCTAssertThrowsError(try Session(model: textOnly, threads: 1).generate([.image(img), .text("hi")], params: GenerationParams())) { e in
            XCTAssertTrue("\(e)".contains("text-only"), "\(e)")
        }
        var opts = LoadOptions(); opts.visionTowerPath = Paths.repo + "/Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x"
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"), options: opts)
        var p = GenerationParams(); p.raw = true
        XCTAssertThrowsError(try Session(model: m, threads: 1).generate([.image(img), .text("no placeholder")], params: p)) { e in
            XCTAssertTrue("\(e)".contains("placeholders"), "\(e)")
        }
    }

    /// A conversation goes on after an image: the image is encoded once, in its own turn.
    func testImageThenFollowUpTurn() throws {
        var opts = LoadOptions(); opts.visionTowerPath = Paths.repo + "/Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x"
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"), options: opts)
        let s = try Session(model: m, threads: 1)
        var p = GenerationParams(); p.maxTokens = 3; p.ignoreEOS = true
        let img = try readNpyRGB(Paths.repo + "/Tests/Fixtures/golden_understanding/image_b.npy")
        _ = try s.generate([.image(img), .text("What is it?")], params: p)
        let r2 = try s.generate([.text("And the colour?")], params: p)
        XCTAssertFalse(r2.promptTokens.contains(imageTokenIndex))
        XCTAssertEqual(r2.tokens.count, 3)
    }
}
