// Image generation (METAMORPH.md section 4) against the no-cache reference loop of
// tools/golden_generation.py (transformers LlamaModel float32 + torch heads; versions in each
// JSON). Visual tokens within 1e-4 max abs, text ids identical before, between and after images,
// image counts / complete flags, stop reasons and position counts equal.
import Foundation
import XCTest
import MetamorphCore
import MetamorphRuntime

final class ImageGenerationTests: XCTestCase {
    static let variants = ["mm-f32", "mm-bf16-sharded", "mm-head-mlp2x-nonorm", "mm-head-other"]
    static let tolerance: Float = 1e-4
    static var goldenDir: String { Paths.repo + "/Tests/Fixtures/golden_generation" }

    static func ints(_ j: JSON?) -> [Int32] { (j?.array ?? []).compactMap { $0.int.map(Int32.init) } }

    /// Runs one golden case through the engine the way its JSON says and compares everything.
    /// Returns the largest visual-token difference.
    @discardableResult
    func checkCase(_ variant: String, _ model: Model, _ c: JSON, threads: Int) throws -> Float {
        let name = c["name"]?.string ?? "?"
        let tag = "\(variant)/\(name) threads=\(threads)"
        var p = GenerationParams()
        p.maxTokens = try XCTUnwrap(c["max_tokens"]?.int)
        p.seed = 0
        let parts: [PromptPart]
        switch name {
        case "forced", "maxtok_inside", "maxtok_at_end":
            parts = [.text(try XCTUnwrap(c["message"]?.string))]
            p.assistantPrefix = try XCTUnwrap(c["assistant_prefix"]?.string)
        case "midtext":
            // The reference forced <image_start> after K greedy text ids: feed those ids as raw
            // tokens and let the assistant prefix "<image_start>" open the image.
            p.raw = true
            parts = [.tokens(Self.ints(c["chat_prompt_ids"]) + Self.ints(c["prefix_text_ids"]))]
            p.assistantPrefix = "<image_start>"
        case "natural":
            parts = [.text(try XCTUnwrap(c["message"]?.string))]
        default:
            XCTFail("\(tag): unknown case"); return 0
        }
        let r = try Session(model: model, threads: threads).generate(parts, params: p)
        XCTAssertEqual(r.promptTokens, Self.ints(c["prompt_ids"]), "\(tag): prompt ids")
        XCTAssertEqual(r.tokens, Self.ints(c["tokens"]), "\(tag): text ids (before, between and after images)")
        XCTAssertEqual(r.stopReason.name, c["stop_reason"]?.string, "\(tag): stop reason")
        XCTAssertEqual(r.timings.generated, c["positions"]?.int, "\(tag): generated positions (text + visual)")
        let images = c["images"]?.array ?? []
        XCTAssertEqual(r.images.count, images.count, "\(tag): number of images")
        var maxDiff: Float = 0
        for (k, (ours, ref)) in zip(r.images, images).enumerated() {
            let rows = ref["tokens"]?.array ?? []
            XCTAssertEqual(ours.count, ref["count"]?.int, "\(tag): image \(k) token count")
            XCTAssertEqual(ours.complete, ref["complete"]?.bool, "\(tag): image \(k) complete flag")
            XCTAssertEqual(ours.tokens.count, ours.count * ours.dim, "\(tag): image \(k) storage")
            for (i, row) in rows.enumerated() where i < ours.count {
                let vals = (row.array ?? []).compactMap { $0.double.map(Float.init) }
                XCTAssertEqual(vals.count, ours.dim, "\(tag): visual token width")
                for (j, v) in vals.enumerated() where j < ours.dim {
                    maxDiff = max(maxDiff, abs(ours.tokens[i * ours.dim + j] - v))
                }
            }
        }
        print("image parity \(tag): visual tokens max |diff| = \(maxDiff), images \(r.images.map { "\($0.count)\($0.complete ? "" : " partial")" }), text ids \(r.tokens.count), stop \(r.stopReason.name)")
        XCTAssertLessThanOrEqual(maxDiff, Self.tolerance, "\(tag): visual tokens")
        return maxDiff
    }

    func checkVariant(_ variant: String, threads: Int = 2, only: Set<String>? = nil) throws {
        let golden = try loadJSON(Self.goldenDir + "/\(variant).json")
        let model = try Model.load(directory: Paths.checkpoint(variant))
        XCTAssertTrue(model.canGenerateImages, "\(variant) should be able to draw")
        XCTAssertEqual(model.visionHead?.outFeatures, golden["visual_token_dim"]?.int)
        XCTAssertEqual(model.config.mm?.numImageTokens, golden["num_image_tokens"]?.int)
        XCTAssertEqual(model.config.mm?.normalizeVision, golden["normalize_vision"]?.bool)
        let cases = golden["cases"]?.array ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 4)
        for c in cases where only == nil || only!.contains(c["name"]?.string ?? "") {
            try checkCase(variant, model, c, threads: threads)
        }
    }

    func testMLPHeadNormalizedF32() throws { try checkVariant("mm-f32") }
    func testLinearHeadBF16Sharded() throws { try checkVariant("mm-bf16-sharded") }
    func testMLP2xHeadUnnormalizedF32() throws { try checkVariant("mm-head-mlp2x-nonorm") }
    func testFallbackHeadF16() throws { try checkVariant("mm-head-other") }
    func testSingleThread() throws {
        try checkVariant("mm-f32", threads: 1, only: ["forced", "midtext"])
        try checkVariant("mm-head-mlp2x-nonorm", threads: 1, only: ["natural"])
    }

    /// The natural case must exist: greedy decoding emits <image_start> by itself (twice) there,
    /// which exercises the engine's switch to image mode on a generated token.
    func testNaturalImageStartIsCovered() throws {
        let golden = try loadJSON(Self.goldenDir + "/mm-head-mlp2x-nonorm.json")
        let natural = try XCTUnwrap((golden["cases"]?.array ?? []).first { $0["name"]?.string == "natural" })
        let tokens = Self.ints(natural["tokens"])
        XCTAssertGreaterThanOrEqual(tokens.filter { $0 == 128256 }.count, 1)
        XCTAssertNotEqual(tokens.first, 128256, "text comes before the first generated image")
    }

    /// A text-only checkpoint cannot start a reply inside an image.
    func testTextOnlyCheckpointRefusesImages() throws {
        let model = try Model.load(directory: Paths.checkpoint("llama-f16"))
        XCTAssertFalse(model.canGenerateImages)
        var p = GenerationParams()
        p.maxTokens = 8
        p.assistantPrefix = "Here is an image based on your request: <image_start>"
        XCTAssertThrowsError(try Session(model: model, threads: 1).generate([.text("Generate an image of a cat.")], params: p)) { e in
            XCTAssertEqual((e as? MMError)?.code, .unsupported, "\(e)")
        }
    }

    /// Cancel as image mode begins: the onText callback sees the generated <image_start> and
    /// cancels; the first visual step observes the latch. (There is no callback during visual
    /// steps, so a cancel after k visual tokens cannot be placed deterministically; a timed
    /// cancel from another thread would be flaky on 64-token images of a tiny model.)
    func testCancelAtImageStart() throws {
        let golden = try loadJSON(Self.goldenDir + "/mm-head-mlp2x-nonorm.json")
        let natural = try XCTUnwrap((golden["cases"]?.array ?? []).first { $0["name"]?.string == "natural" })
        let expected = Self.ints(natural["tokens"])
        let firstStart = try XCTUnwrap(expected.firstIndex(of: 128256))
        let model = try Model.load(directory: Paths.checkpoint("mm-head-mlp2x-nonorm"))
        let s = try Session(model: model, threads: 1)
        var p = GenerationParams()
        p.maxTokens = try XCTUnwrap(natural["max_tokens"]?.int)
        let r = try s.generate([.text(try XCTUnwrap(natural["message"]?.string))], params: p) { _, id in
            if id == 128256 { s.cancel() }
            return true
        }
        XCTAssertEqual(r.stopReason, .cancelled)
        XCTAssertEqual(r.tokens, Array(expected[...firstStart]))
        XCTAssertTrue(r.images.allSatisfy { $0.count == 0 && !$0.complete }, "no visual token after the cancel")
        XCTAssertLessThanOrEqual(r.images.count, 1)
        // The session is usable again.
        p.maxTokens = 2
        XCTAssertNoThrow(try s.generate([.text("Again")], params: p))
    }
}
