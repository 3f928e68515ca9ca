// Parity with transformers' LlamaForCausalLM on tiny random checkpoints: golden data from
// tools/golden_llama.py (versions recorded in each JSON). First-step logits within 1e-4 max abs,
// greedy ids identical.
import XCTest
import MetamorphCore
import MetamorphRuntime

final class ParityTests: XCTestCase {
    static let variants = ["mm-f32", "mm-bf16-sharded", "llama-f16"]
    static let logitTolerance: Float = 1e-4

    func checkVariant(_ name: String, threads: Int) throws {
        let golden = try loadJSON(Paths.golden + "/\(name).json")
        let model = try Model.load(directory: Paths.checkpoint(name))
        guard let cases = golden["cases"]?.array, !cases.isEmpty else { return XCTFail("\(name): golden has no cases") }
        for c in cases {
            let caseName = c["name"]?.string ?? "?"
            let promptIDs = (c["prompt_ids"]?.array ?? []).compactMap { $0.int.map(Int32.init) }
            let greedy = (c["greedy_ids"]?.array ?? []).compactMap { $0.int.map(Int32.init) }
            XCTAssertFalse(promptIDs.isEmpty)
            XCTAssertGreaterThanOrEqual(greedy.count, 32)
            let session = try Session(model: model, threads: threads)
            var p = GenerationParams()
            p.raw = true
            p.maxTokens = greedy.count
            p.ignoreEOS = true
            p.keepLogits = true
            p.seed = 0
            let r = try session.generate([.tokens(promptIDs)], params: p)
            XCTAssertEqual(r.tokens, greedy, "\(name)/\(caseName): greedy ids differ from transformers")
            if let lf = c["logits_file"]?.string {
                let ref = try readNpyFloat32(Paths.golden + "/" + lf)
                let ours = try XCTUnwrap(r.firstLogits)
                XCTAssertEqual(ours.count, ref.count)
                var maxDiff: Float = 0
                for i in 0..<min(ours.count, ref.count) { maxDiff = max(maxDiff, abs(ours[i] - ref[i])) }
                print("parity \(name)/\(caseName) threads=\(threads): first-step logits max |diff| = \(maxDiff)")
                XCTAssertLessThanOrEqual(maxDiff, Self.logitTolerance, "\(name)/\(caseName) logits")
            }
        }
    }

    func testMetaMorphF32() throws { try checkVariant("mm-f32", threads: 2) }
    func testMetaMorphBF16Sharded() throws { try checkVariant("mm-bf16-sharded", threads: 2) }
    func testLlamaF16() throws { try checkVariant("llama-f16", threads: 1) }
    func testSingleThreadF32() throws { try checkVariant("mm-f32", threads: 1) }

    /// The prompt the engine builds from text must be the reference's, BOS twice included.
    func testPromptBuilding() throws {
        for name in ["mm-f32", "llama-f16"] {
            let golden = try loadJSON(Paths.golden + "/\(name).json")
            let model = try Model.load(directory: Paths.checkpoint(name))
            for c in golden["cases"]?.array ?? [] {
                let expected = (c["prompt_ids"]?.array ?? []).compactMap { $0.int.map(Int32.init) }
                var p = GenerationParams()
                p.maxTokens = 1
                let text: String
                switch c["name"]?.string {
                case "chat": text = "What is the capital of France?"
                case "raw": text = "Hello world"; p.raw = true
                default: continue
                }
                let r = try Session(model: model, threads: 1).generate([.text(text)], params: p)
                XCTAssertEqual(r.promptTokens, expected, "\(name): prompt ids")
                if c["name"]?.string == "chat" { XCTAssertEqual(Array(r.promptTokens.prefix(2)), [128000, 128000]) }
            }
        }
    }
}
