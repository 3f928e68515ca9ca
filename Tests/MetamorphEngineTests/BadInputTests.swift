// Every malformed input gets an MMError with a message naming the problem; nothing crashes.
import Foundation
import XCTest
import MetamorphCore
import MetamorphRuntime

final class BadInputTests: XCTestCase {
    var tmp: String = ""

    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "mm-bad-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    /// A copy of the mm-f32 checkpoint (symlinks for the big files) that a test then breaks.
    func copyCheckpoint(_ name: String = "mm-f32") throws -> String {
        let src = Paths.checkpoint(name)
        let dst = tmp + "/" + name
        try FileManager.default.createDirectory(atPath: dst, withIntermediateDirectories: true)
        for f in try FileManager.default.contentsOfDirectory(atPath: src) {
            if f.hasSuffix(".json") { try FileManager.default.copyItem(atPath: src + "/" + f, toPath: dst + "/" + f) } else {
                try FileManager.default.createSymbolicLink(atPath: dst + "/" + f, withDestinationPath: src + "/" + f)
            }
        }
        return dst
    }

    func expectError(_ code: MMError.Code, containing: String, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("expected \(code) error containing \"\(containing)\"", file: file, line: line)
        } catch let e as MMError {
            XCTAssertEqual(e.code, code, "\(e.message)", file: file, line: line)
            XCTAssertTrue(e.message.contains(containing), "message \"\(e.message)\" lacks \"\(containing)\"", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    /// Write a safetensors file from a raw header string and data size.
    func writeSafetensors(_ path: String, header: String, dataBytes: Int, declaredLength: UInt64? = nil) throws {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var d = Data()
        var len = declaredLength ?? UInt64(h.count)
        withUnsafeBytes(of: &len) { d.append(contentsOf: $0) }
        d.append(contentsOf: h)
        d.append(Data(count: dataBytes))
        try d.write(to: URL(fileURLWithPath: path))
    }

    func replaceWeights(_ dir: String, header: String, dataBytes: Int, declaredLength: UInt64? = nil) throws {
        try FileManager.default.removeItem(atPath: dir + "/model.safetensors")
        try writeSafetensors(dir + "/model.safetensors", header: header, dataBytes: dataBytes, declaredLength: declaredLength)
    }

    func testMissingDirectory() {
        expectError(.io, containing: "no such checkpoint") { _ = try Model.load(directory: tmp + "/nope") }
    }

    func testBrokenConfigJSON() throws {
        let d = try copyCheckpoint()
        try "{\"hidden_size\": 64,".write(toFile: d + "/config.json", atomically: true, encoding: .utf8)
        expectError(.format, containing: "config.json") { _ = try Model.load(directory: d) }
    }

    func testUnsupportedModelType() throws {
        let d = try copyCheckpoint()
        try "{\"model_type\": \"gpt2\", \"hidden_size\": 64}".write(toFile: d + "/config.json", atomically: true, encoding: .utf8)
        expectError(.unsupported, containing: "gpt2") { _ = try Model.load(directory: d) }
    }

    func testTruncatedSafetensors() throws {
        let d = try copyCheckpoint()
        let full = try Data(contentsOf: URL(fileURLWithPath: d + "/model.safetensors"))
        try FileManager.default.removeItem(atPath: d + "/model.safetensors")
        try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: d + "/model.safetensors"))
        expectError(.format, containing: "outside the data") { _ = try Model.load(directory: d) }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: d + "/model.safetensors"))
        expectError(.format, containing: "truncated") { _ = try Model.load(directory: d) }
    }

    func testHeaderLengthPastEnd() throws {
        let d = try copyCheckpoint()
        try replaceWeights(d, header: "{}", dataBytes: 0, declaredLength: 1 << 40)
        expectError(.format, containing: "past the end") { _ = try Model.load(directory: d) }
    }

    func testOverlappingAndOutsideOffsets() throws {
        let d = try copyCheckpoint()
        try replaceWeights(d, header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#, dataBytes: 32)
        expectError(.format, containing: "overlap") { _ = try Model.load(directory: d) }
        try replaceWeights(d, header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 8)
        expectError(.format, containing: "outside the data") { _ = try Model.load(directory: d) }
        try replaceWeights(d, header: #"{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#, dataBytes: 16)
        expectError(.format, containing: "needs") { _ = try Model.load(directory: d) }
    }

    func testMissingTensorAndShapeMismatch() throws {
        let d = try copyCheckpoint()
        try replaceWeights(d, header: #"{"model.embed_tokens.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 16)
        expectError(.format, containing: "model.embed_tokens.weight") { _ = try Model.load(directory: d) }
        // Config says a different hidden size than the weights hold.
        let cfgPath = d + "/config.json"
        try FileManager.default.removeItem(atPath: d + "/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: d + "/model.safetensors", withDestinationPath: Paths.checkpoint("mm-f32") + "/model.safetensors")
        var cfg = try String(contentsOfFile: cfgPath, encoding: .utf8)
        cfg = cfg.replacingOccurrences(of: "\"intermediate_size\": ", with: "\"intermediate_size\": 1")
        try cfg.write(toFile: cfgPath, atomically: true, encoding: .utf8)
        expectError(.format, containing: "the config implies") { _ = try Model.load(directory: d) }
        // A tensor removed from the file: name it.
        try replaceWeights(d, header: "{}", dataBytes: 0)
        expectError(.format, containing: "missing tensor") { _ = try Model.load(directory: d) }
    }

    func testWrongDtype() throws {
        let d = try copyCheckpoint()
        try replaceWeights(d, header: #"{"model.embed_tokens.weight":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}"#, dataBytes: 4)
        expectError(.unsupported, containing: "I8") { _ = try Model.load(directory: d) }
        try replaceWeights(d, header: #"{"x":{"dtype":"Q7","shape":[4],"data_offsets":[0,4]}}"#, dataBytes: 4)
        expectError(.format, containing: "unknown dtype") { _ = try Model.load(directory: d) }
    }

    func testShardOutsideCheckpoint() throws {
        let d = try copyCheckpoint("mm-bf16-sharded")
        let idx = #"{"metadata":{},"weight_map":{"model.embed_tokens.weight":"../../etc/passwd"}}"#
        try FileManager.default.removeItem(atPath: d + "/model.safetensors.index.json")
        try idx.write(toFile: d + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        expectError(.format, containing: "outside the checkpoint") { _ = try Model.load(directory: d) }
    }

    func testPromptLongerThanContext() throws {
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"))
        let s = try Session(model: m, contextLength: 16, threads: 1)
        var p = GenerationParams(); p.raw = true; p.maxTokens = 4
        expectError(.contextFull, containing: "positions") { _ = try s.generate([.tokens(Array(repeating: 100, count: 40))], params: p) }
        XCTAssertEqual(s.nPast, 0, "a refused prompt must leave the session unchanged")
        // Generation that runs into the end of the context stops with a reason, not a crash.
        p.maxTokens = 100; p.ignoreEOS = true
        let r = try s.generate([.tokens([128000, 9906])], params: p)
        XCTAssertEqual(r.stopReason, .contextFull)
        XCTAssertLessThanOrEqual(s.nPast, 16)
    }

    func testZeroMaxTokensAndBadSampling() throws {
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"))
        let s = try Session(model: m, threads: 1)
        var p = GenerationParams(); p.maxTokens = 0
        expectError(.invalidArgument, containing: "max_tokens") { _ = try s.generate([.text("hi")], params: p) }
        p.maxTokens = 1; p.sampling.topP = 0
        expectError(.invalidArgument, containing: "top_p") { _ = try s.generate([.text("hi")], params: p) }
        p = GenerationParams(); p.raw = true
        expectError(.outOfRange, containing: "999999") { _ = try s.generate([.tokens([999999])], params: p) }
        p = GenerationParams()
        expectError(.invalidArgument, containing: "no parts") { _ = try s.generate([], params: p) }
    }

    func testTwoGenerationsAtOnceOnOneSession() throws {
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"))
        let s = try Session(model: m, threads: 1)
        let inside = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let t = Thread {
            var p = GenerationParams(); p.maxTokens = 3; p.ignoreEOS = true
            var first = true
            _ = try? s.generate([.text("Hello")], params: p) { _, _ in
                if first { first = false; inside.signal(); release.wait() }
                return true
            }
            inside.signal()
        }
        t.start()
        inside.wait()
        expectError(.busy, containing: "already generating") { _ = try s.generate([.text("Hi")], params: GenerationParams()) }
        release.signal()
        inside.wait()
    }

    func testCancelLatchedBeforeStart() throws {
        let m = try Model.load(directory: Paths.checkpoint("mm-f32"))
        let s = try Session(model: m, threads: 1)
        s.cancel()
        expectError(.cancelled, containing: "cancelled") { _ = try s.generate([.text("Hello")], params: GenerationParams()) }
        // The latch is consumed: the next generation runs.
        var p = GenerationParams(); p.maxTokens = 2
        XCTAssertNoThrow(try s.generate([.text("Hello")], params: p))
    }
}
