import Foundation
import XCTest
@testable import MetamorphTokenizer

/// /work/shared, found relative to this file (repo/Tests/MetamorphTokenizerTests/…).
let sharedDir: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared")
let fixtures = sharedDir.appendingPathComponent("fixtures/tokenizer")
let realTokenizerPath = fixtures.appendingPathComponent("meta-llama-3.1-8b-instruct/tokenizer.json").path

/// Loaded once for all tests.
let sharedTokenizer: Tokenizer? = try? Tokenizer(path: realTokenizerPath)

func realTokenizer() throws -> Tokenizer {
    guard let t = sharedTokenizer else { throw XCTSkip("real tokenizer.json not found at \(realTokenizerPath)") }
    return t
}

final class ConformanceTests: XCTestCase {
    func testLlama3Cases() throws {
        let tok = try realTokenizer()
        let data = try Data(contentsOf: fixtures.appendingPathComponent("llama3_cases.jsonl"))
        // Split on "\n" only (texts may contain U+2028 / U+0085).
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: true)
        var matched = 0
        for line in lines {
            let obj = try JSONSerialization.jsonObject(with: Data(line)) as! [String: Any]
            let text = obj["text"] as! String
            let ids = (obj["ids"] as! [NSNumber]).map { $0.int32Value }
            let decoded = obj["decoded"] as! String
            let got = tok.encode(text)
            let dec = try tok.decode(got)
            XCTAssertEqual(got, ids, "[\(obj["category"]!)] \(text.debugDescription)")
            XCTAssertEqual(dec, decoded, "[\(obj["category"]!)] decode of \(text.debugDescription)")
            // Byte API gives the same.
            XCTAssertEqual(try tok.encode(utf8: Array(text.utf8)), ids)
            if got == ids && dec == decoded { matched += 1 }
        }
        XCTAssertEqual(lines.count, 213)
        XCTAssertEqual(matched, lines.count)
        print("llama3_cases: \(matched)/\(lines.count) matched")
    }

    func testLlamaCppVectors() throws {
        let tok = try realTokenizer()
        let inp = try String(contentsOf: fixtures.appendingPathComponent("llama.cpp/ggml-vocab-llama-bpe.gguf.inp"), encoding: .utf8)
        let out = try String(contentsOf: fixtures.appendingPathComponent("llama.cpp/ggml-vocab-llama-bpe.gguf.out"), encoding: .utf8)
        var tests = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
        if tests.last == "" { tests.removeLast() }
        var expected = out.components(separatedBy: "\n")
        if expected.last == "" { expected.removeLast() }
        XCTAssertEqual(tests.count, expected.count)
        var matched = 0
        for (t, e) in zip(tests, expected) {
            let ids = e.split(separator: " ").map { Int32($0)! }
            let got = tok.encode(t)
            XCTAssertEqual(got, ids, t.debugDescription)
            if got == ids { matched += 1 }
        }
        XCTAssertEqual(matched, 46)
        print("llama.cpp llama-bpe: \(matched)/\(tests.count) matched")
    }

    func testBasics() throws {
        let tok = try realTokenizer()
        XCTAssertEqual(tok.vocabSize, 128258)
        XCTAssertEqual(tok.bosID, 128000)
        XCTAssertEqual(tok.encode("Hello world"), [9906, 1917])
        XCTAssertEqual(tok.encode("Hello world", addSpecialTokens: true), [128000, 9906, 1917])
        XCTAssertEqual(tok.encode("This is a test sentence."), [2028, 374, 264, 1296, 11914, 13])
        XCTAssertEqual(tok.encode(""), [])
        XCTAssertEqual(tok.encode("", addSpecialTokens: true), [128000])
        XCTAssertEqual(tok.tokenID("<|eot_id|>"), 128009)
        XCTAssertEqual(tok.tokenID("<image_start>"), 128256)
        XCTAssertEqual(tok.tokenID("<image_end>"), 128257)
        XCTAssertEqual(tok.tokenID(" world"), 1917)
        XCTAssertNil(tok.tokenID("definitely not a token"))
        XCTAssertTrue(tok.isSpecial(128009))
        XCTAssertTrue(tok.isSpecial(128257))
        XCTAssertFalse(tok.isSpecial(1917))
        XCTAssertFalse(tok.isSpecial(-1))
        XCTAssertEqual(tok.tokenToPiece(1917), Array(" world".utf8))
        XCTAssertEqual(tok.tokenToPiece(128256), Array("<image_start>".utf8))
        XCTAssertNil(tok.tokenToPiece(128258))
        XCTAssertEqual(tok.encode("<|eot_id|><image_start>x<image_end>"), [128009, 128256, 87, 128257])
        XCTAssertEqual(try tok.decode([128000, 9906, 128009], skipSpecialTokens: true), "Hello")
        XCTAssertEqual(try tok.decode([128000, 9906, 128009]), "<|begin_of_text|>Hello<|eot_id|>")
        // A lone byte token: U+FFFD like the reference.
        XCTAssertEqual(try tok.decode([15722]), "\u{FFFD}")
        XCTAssertEqual(Tokenizer.unicodeVersion, "16.0.0")
    }

    func testWithoutImageTokensOption() throws {
        let t = try Tokenizer(path: realTokenizerPath, options: TokenizerOptions(addMetaMorphImageTokens: false))
        XCTAssertEqual(t.vocabSize, 128256)
        XCTAssertNil(t.tokenID("<image_start>"))
        XCTAssertNotEqual(t.encode("<image_start>"), [128256])
    }

    func testDirectoryPath() throws {
        _ = try realTokenizer()
        let t = try Tokenizer(path: (realTokenizerPath as NSString).deletingLastPathComponent)
        XCTAssertEqual(t.vocabSize, 128258)
    }

    func testPreTokenizerEdgeCases() throws {
        let tok = try realTokenizer()
        // Values from `tokenizers` 0.23.3. U+017F folds to 's' in the case-insensitive contractions.
        XCTAssertEqual(tok.encode("x'\u{17F}x"), [87, 6, 129, 123, 87])
        XCTAssertEqual(tok.encode("I'LL"), [40, 6, 4178])
        // Contractions are case-insensitive.
        XCTAssertEqual(tok.encode("I'LL"), tok.encode("I") + tok.encode("'LL"))
    }
}

final class PromptTests: XCTestCase {
    func testSingleTurn() throws {
        let b = PromptBuilder(tokenizer: try realTokenizer())
        let p = b.chat(message: "What is in this picture?")
        XCTAssertEqual(PromptBuilder.flatten(p), [128000, 128000, 128006, 882, 128007, 198, 3923, 374, 304, 420, 6945, 30,
                                                  128009, 128006, 78191, 128007, 198])
        XCTAssertEqual(PromptBuilder.renderLlama3([ChatTurn(role: .user, text: "hi")]),
                       "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n")
    }

    func testImagesAndAssistantPrefix() throws {
        let b = PromptBuilder(tokenizer: try realTokenizer())
        let p = b.chat(message: "Compare them.", imageCount: 2, assistantPrefix: "Sure")
        XCTAssertEqual(PromptBuilder.flatten(p), [128000, 128000, 128006, 882, 128007, 198, 128256, -200, 128257, 128256, -200, 128257,
                                                  198, 28474, 1124, 13, 128009, 128006, 78191, 128007, 198, 40914])
        XCTAssertEqual(p.filter { if case .image = $0 { return true }; return false }, [.image(0), .image(1)])
        XCTAssertEqual(p[1], .image(0))
    }

    func testMultiTurn() throws {
        let b = PromptBuilder(tokenizer: try realTokenizer())
        let p = b.chat([ChatTurn(role: .user, text: "Hi"), ChatTurn(role: .assistant, text: "Hello!"),
                        ChatTurn(role: .user, text: "Draw a cat.")])
        XCTAssertEqual(PromptBuilder.flatten(p), [128000, 128000, 128006, 882, 128007, 198, 13347, 128009, 128006, 78191, 128007, 198,
                                                  9906, 0, 128009, 128006, 882, 128007, 198, 8300, 264, 8415, 13, 128009, 128006, 78191,
                                                  128007, 198])
    }

    func testRaw() throws {
        let b = PromptBuilder(tokenizer: try realTokenizer())
        XCTAssertEqual(PromptBuilder.flatten(b.raw("A photo of <image> a dog")), [128000, 32, 6685, 315, 220, -200, 264, 5679])
        XCTAssertEqual(PromptBuilder.flatten(b.raw("Hello world")), [128000, 9906, 1917])
    }
}

final class StreamingTests: XCTestCase {
    func testStreamingMatchesDecode() throws {
        let tok = try realTokenizer()
        let text = "héllo 😀 中文 <|eot_id|> 👨‍👩‍👧 done"
        let ids = tok.encode(text)
        // Byte by byte too: split the emoji into its single-byte tokens.
        var byteIDs: [Int32] = []
        for b in Array("😀中".utf8) { byteIDs.append(tok.encode(utf8: [b], addSpecialTokens: false, unchecked: true)) }
        for seq in [ids, byteIDs, [15722] + ids, ids + [15722]] {
            let sd = tok.makeStreamingDecoder(skipSpecialTokens: false)
            var pieces: [String] = []
            for id in seq { pieces.append(try sd.push(id)) }
            pieces.append(sd.finish())
            XCTAssertEqual(pieces.joined(), try tok.decode(seq))
            let full = try tok.decode(seq)
            if !full.contains("\u{FFFD}") { for p in pieces { XCTAssertFalse(p.contains("\u{FFFD}")) } }
        }
        // Nothing is emitted until the 4-byte emoji is complete.
        let sd = tok.makeStreamingDecoder(skipSpecialTokens: false)
        XCTAssertEqual(try sd.push(byteIDs[0]), "")
        XCTAssertEqual(try sd.push(byteIDs[1]), "")
        XCTAssertEqual(try sd.push(byteIDs[2]), "")
        XCTAssertEqual(try sd.push(byteIDs[3]), "😀")
        // Skipping specials.
        let sk = tok.makeStreamingDecoder(skipSpecialTokens: true)
        XCTAssertEqual(try sk.push(128009), "")
        XCTAssertEqual(try sk.push(9906), "Hello")
        XCTAssertThrowsError(try sk.push(999_999))
    }
}

extension Tokenizer {
    /// Test helper: the id of a single-byte token.
    func encode(utf8 bytes: [UInt8], addSpecialTokens: Bool, unchecked: Bool) -> Int32 {
        model.byteToID[Int(bytes[0])]
    }
}

final class ErrorTests: XCTestCase {
    func load(_ json: String) -> Error? {
        do { _ = try Tokenizer(jsonData: Array(json.utf8)); return nil } catch { return error }
    }

    /// A tiny valid tokenizer.json with the LLaMA-3 pipeline.
    static func tiny(vocab: String = #""a": 0, "b": 1, "ab": 2, "Ġ": 3, "c": 4"#,
                     merges: String = #"["a b"]"#, preTokenizer: String? = nil, extra: String = "") -> String {
        let pattern = Builder.llama3Pattern.replacingOccurrences(of: "\\", with: "\\\\")
        let pre = preTokenizer ?? #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\#(pattern)"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}"#
        return #"{"version": "1.0", "added_tokens": [{"id": 5, "content": "<s>", "special": true, "normalized": false}], "normalizer": null, "pre_tokenizer": \#(pre), "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}}, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "ignore_merges": false, "vocab": {\#(vocab)}, "merges": \#(merges)}\#(extra)}"#
    }

    func testTinyLoads() throws {
        let t = try Tokenizer(jsonData: Array(ErrorTests.tiny().utf8))
        XCTAssertEqual(t.encode("ab"), [2])
        XCTAssertEqual(t.encode("abc", addSpecialTokens: true), [5, 2, 4])
        XCTAssertEqual(t.bosID, 5)
        XCTAssertEqual(t.vocabSize, 6)
        // Pair form of merges gives the same.
        let t2 = try Tokenizer(jsonData: Array(ErrorTests.tiny(merges: #"[["a", "b"]]"#).utf8))
        XCTAssertEqual(t2.encode("ab ab"), [2, 3, 2])
    }

    func testNotJSON() {
        let e = load("this is not json")
        guard case .invalidJSON? = e as? TokenizerError else { return XCTFail("\(String(describing: e))") }
        XCTAssertTrue("\(e!)".contains("invalid JSON"))
        XCTAssertNotNil(load(#"{"model": "#))
        XCTAssertNotNil(load("[1, 2"))
    }

    func testMissingModel() {
        let e = load(#"{"version": "1.0", "pre_tokenizer": null}"#) ?? load(#"{"version": "1.0"}"#)
        let e2 = load(ErrorTests.tiny().replacingOccurrences(of: #""model""#, with: #""modelX""#))
        XCTAssertEqual(e2 as? TokenizerError, .missingField("model"))
        XCTAssertNotNil(e)
        XCTAssertTrue("\(e2!)".contains("missing `model`"))
    }

    func testUnknownType() {
        let e = load(ErrorTests.tiny(preTokenizer: #"{"type": "Frobnicate"}"#))
        XCTAssertEqual(e as? TokenizerError, .unknownType(component: "pre_tokenizer", type: "Frobnicate"))
        XCTAssertEqual("\(e!)", #"tokenizer.json: unknown type "Frobnicate" in pre_tokenizer"#)
        let m = load(ErrorTests.tiny().replacingOccurrences(of: #""type": "BPE""#, with: #""type": "Unigram""#))
        XCTAssertEqual(m as? TokenizerError, .unknownType(component: "model", type: "Unigram"))
        let d = load(ErrorTests.tiny().replacingOccurrences(of: #""decoder": {"type": "ByteLevel"}"#, with: #""decoder": {"type": "WordPiece"}"#))
        XCTAssertEqual(d as? TokenizerError, .unknownType(component: "decoder", type: "WordPiece"))
    }

    func testMergeUnknownToken() {
        let e = load(ErrorTests.tiny(merges: #"["a b", "a zz"]"#))
        XCTAssertEqual(e as? TokenizerError, .mergeUnknownToken(rank: 1, token: "zz"))
        XCTAssertTrue("\(e!)".contains("unknown token \"zz\""))
        XCTAssertEqual(load(ErrorTests.tiny(merges: #"["a c"]"#)) as? TokenizerError, .mergeUnknownToken(rank: 0, token: "ac"))
        guard case .malformedMerge? = load(ErrorTests.tiny(merges: #"["abc"]"#)) as? TokenizerError else { return XCTFail() }
        guard case .malformedMerge? = load(ErrorTests.tiny(merges: #"[["a"]]"#)) as? TokenizerError else { return XCTFail() }
    }

    func testDuplicateIDs() {
        let e = load(ErrorTests.tiny(vocab: #""a": 0, "b": 1, "ab": 2, "Ġ": 3, "c": 2"#))
        XCTAssertEqual(e as? TokenizerError, .duplicateID(id: 2, first: "ab", second: "c"))
        XCTAssertTrue("\(e!)".contains("duplicate id 2"))
        // Added token colliding with a vocabulary id.
        let e2 = load(ErrorTests.tiny().replacingOccurrences(of: #""id": 5, "content": "<s>""#, with: #""id": 4, "content": "<s>""#))
        XCTAssertEqual(e2 as? TokenizerError, .duplicateID(id: 4, first: "c", second: "<s>"))
    }

    func testInvalidUTF8() throws {
        let tok = try Tokenizer(jsonData: Array(ErrorTests.tiny().utf8))
        XCTAssertThrowsError(try tok.encode(utf8: [0x61, 0x62, 0xFF, 0x61])) { e in
            XCTAssertEqual(e as? TokenizerError, .invalidUTF8(offset: 2))
            XCTAssertEqual("\(e)", "invalid UTF-8 at byte offset 2")
        }
        XCTAssertThrowsError(try tok.encode(utf8: [0x61, 0xE4, 0xB8])) // truncated
        XCTAssertThrowsError(try tok.encode(utf8: [0xED, 0xA0, 0x80]))  // surrogate
        XCTAssertThrowsError(try tok.encode(utf8: [0xC0, 0x80]))        // overlong
    }

    func testOutOfRange() throws {
        let tok = try Tokenizer(jsonData: Array(ErrorTests.tiny().utf8))
        XCTAssertThrowsError(try tok.decode([0, 6])) { e in
            XCTAssertEqual(e as? TokenizerError, .idOutOfRange(id: 6, vocabSize: 6))
            XCTAssertEqual("\(e)", "token id 6 out of range 0..<6")
        }
        XCTAssertThrowsError(try tok.decode([-1]))
        XCTAssertThrowsError(try tok.decodeBytes([Int32.max], skipSpecialTokens: false))
        XCTAssertNil(tok.tokenToPiece(-5))
    }

    func testJSONLineHelper() throws {
        XCTAssertEqual(try TokenizerJSON.stringField(Array(#"{"text": "a\u00e9\ud83d\ude00\n"}"#.utf8), "text"),
                       Array("aé😀\n".utf8))
        XCTAssertThrowsError(try TokenizerJSON.stringField(Array(#"{"text": "\ud800x"}"#.utf8), "text"))
        XCTAssertThrowsError(try TokenizerJSON.stringField(Array(#"{"text": "\udc00"}"#.utf8), "text"))
        var out: [UInt8] = []
        TokenizerJSON.appendQuoted("a\"b\\c\n\u{01}é", to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #""a\"b\\c\n\u0001é""#)
    }
}

final class PathologicalTests: XCTestCase {
    func time(_ f: () -> Void) -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        f()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }

    func testLongInputsAreLinear() throws {
        let tok = try realTokenizer()
        for (name, unit) in [("one repeated char", "a"), ("no spaces", "xq9Zé"), ("one repeated digit", "7"), ("spaces", " ")] {
            let small = String(repeating: unit, count: 100_000 / unit.utf8.count)
            let big = String(repeating: unit, count: 1_000_000 / unit.utf8.count)
            var ids: [Int32] = []
            let ts = time { ids = tok.encode(small) }
            XCTAssertEqual(try tok.decode(ids), small)
            let tb = time { ids = tok.encode(big) }
            XCTAssertEqual(try tok.decode(ids), big)
            print(String(format: "pathological %@: 100 KB %.3f s, 1 MB %.3f s (%d tokens)", name, ts, tb, ids.count))
            XCTAssertLessThan(tb, max(ts * 40, 2.0), "\(name): 10x the input should not take ~100x the time")
        }
    }
}
