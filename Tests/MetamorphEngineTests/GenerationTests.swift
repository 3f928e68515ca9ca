// Sampling, sessions across turns, stop strings, streaming and jobs on a tiny checkpoint.
import Foundation
import XCTest
import MetamorphCore
import MetamorphRuntime

final class GenerationTests: XCTestCase {
    static let model: Model? = try? Model.load(directory: Paths.checkpoint("mm-f32"))
    func model() throws -> Model { try XCTUnwrap(Self.model, "tiny checkpoint mm-f32 did not load") }

    func testSameSeedSameOutputDifferentSeedDiffers() throws {
        let m = try model()
        var p = GenerationParams()
        p.maxTokens = 24; p.ignoreEOS = true
        p.sampling.temperature = 1.5; p.sampling.topK = 200; p.sampling.topP = 0.95; p.sampling.minP = 0.01
        p.sampling.repeatPenalty = 1.1
        p.seed = 42
        let a = try Session(model: m, threads: 2).generate([.text("Tell me a story")], params: p)
        let b = try Session(model: m, threads: 2).generate([.text("Tell me a story")], params: p)
        XCTAssertEqual(a.tokens, b.tokens)
        XCTAssertEqual(a.seed, 42)
        p.seed = 43
        let c = try Session(model: m, threads: 2).generate([.text("Tell me a story")], params: p)
        XCTAssertNotEqual(a.tokens, c.tokens)
        // A random seed is reported and reproduces the run.
        p.seed = nil
        let d = try Session(model: m, threads: 2).generate([.text("Tell me a story")], params: p)
        p.seed = d.seed
        let e = try Session(model: m, threads: 2).generate([.text("Tell me a story")], params: p)
        XCTAssertEqual(d.tokens, e.tokens)
    }

    func testTopKOneIsGreedy() throws {
        let m = try model()
        var p = GenerationParams()
        p.maxTokens = 12; p.ignoreEOS = true
        let greedy = try Session(model: m, threads: 1).generate([.text("Hello")], params: p)
        p.sampling.temperature = 0.8; p.sampling.topK = 1; p.seed = 7
        let k1 = try Session(model: m, threads: 1).generate([.text("Hello")], params: p)
        XCTAssertEqual(greedy.tokens, k1.tokens)
    }

    /// A second turn continues the cache: its prompt is the previous stop token (or <|eot_id|>)
    /// plus the next user turn, without a new BOS; and it gives the same ids as a fresh session
    /// fed the whole conversation at once.
    func testMultiTurnKeepsCache() throws {
        let m = try model()
        let s = try Session(model: m, threads: 2)
        var p = GenerationParams(); p.maxTokens = 5; p.ignoreEOS = true
        let r1 = try s.generate([.text("Hi there")], params: p)
        let n1 = s.nPast
        let r2 = try s.generate([.text("And then?")], params: p)
        XCTAssertNotEqual(r2.promptTokens.first, 128000, "no BOS in a later turn")
        XCTAssertEqual(r2.promptTokens.first, r1.tokens.last, "the unfed last token comes first")
        XCTAssertEqual(r2.promptTokens[1], 128009, "the unfinished reply is closed with <|eot_id|>")
        XCTAssertEqual(s.nPast, n1 + r2.promptTokens.count + r2.tokens.count - 1)
        // Same ids from scratch.
        let all = r1.promptTokens + r1.tokens + Array(r2.promptTokens.dropFirst())
        var raw = GenerationParams(); raw.raw = true; raw.maxTokens = 5; raw.ignoreEOS = true
        let fresh = try Session(model: m, threads: 2).generate([.tokens(all)], params: raw)
        XCTAssertEqual(fresh.tokens, r2.tokens)
        try s.reset()
        XCTAssertEqual(s.nPast, 0)
    }

    func testStreamingMatchesResultAndStopStrings() throws {
        let m = try model()
        var p = GenerationParams(); p.maxTokens = 30; p.ignoreEOS = true
        var streamed = ""
        let r = try Session(model: m, threads: 2).generate([.text("Write")], params: p) { t, _ in streamed += t; return true }
        XCTAssertEqual(streamed, r.text)
        XCTAssertGreaterThan(r.text.count, 3)
        // Stop at a piece of the text we know will come.
        let chars = Array(r.text)
        let stop = String(chars[chars.count / 2..<min(chars.count, chars.count / 2 + 2)])
        p.stopStrings = [stop]
        var streamed2 = ""
        let r2 = try Session(model: m, threads: 2).generate([.text("Write")], params: p) { t, _ in streamed2 += t; return true }
        XCTAssertEqual(r2.stopReason, .stopString)
        XCTAssertFalse(r2.text.contains(stop))
        XCTAssertTrue(r.text.hasPrefix(r2.text))
        XCTAssertEqual(streamed2, r2.text)
    }

    func testCallbackStopAndAssistantPrefix() throws {
        let m = try model()
        var p = GenerationParams(); p.maxTokens = 30; p.ignoreEOS = true
        var n = 0
        let r = try Session(model: m, threads: 1).generate([.text("Go")], params: p) { _, _ in n += 1; return n < 3 }
        XCTAssertEqual(r.stopReason, .cancelled)
        XCTAssertEqual(r.tokens.count, 3)
        p.assistantPrefix = "Sure,"
        p.maxTokens = 1
        let r2 = try Session(model: m, threads: 1).generate([.text("Go")], params: p)
        let tail = try XCTUnwrap(m.tokenizer).encode("\n" + "Sure,").suffix(2)
        XCTAssertEqual(Array(r2.promptTokens.suffix(tail.count)), Array(tail))
    }

    func testJobPollAndCancel() throws {
        let m = try model()
        let s = try Session(model: m, threads: 1)
        var p = GenerationParams(); p.maxTokens = 20; p.ignoreEOS = true
        let job = GenerationJob(session: s, parts: [.text("Count")], params: p)
        try job.start()
        var text: [UInt8] = []
        var stop = StopReason.none
        for _ in 0..<100000 {
            let (b, st) = job.poll(capacity: 7)
            text += b; stop = st
            if st != .none { break }
            usleep(1000)
        }
        let r = try job.wait()
        XCTAssertEqual(stop, .maxTokens)
        XCTAssertEqual(String(decoding: text, as: UTF8.self), r.text)
        // Cancel right away: latched, the job ends early.
        let job2 = GenerationJob(session: s, parts: [.text("More")], params: p)
        job2.cancel()
        try job2.start()
        // Either the worker saw the latch before starting (an MMError .cancelled) or during the
        // prompt (a result with stop reason cancelled); never a finished reply.
        do {
            let r2 = try job2.wait()
            XCTAssertEqual(r2.stopReason, .cancelled)
        } catch let e as MMError {
            XCTAssertEqual(e.code, .cancelled, e.message)
        }
        // The session works again afterwards.
        p.maxTokens = 2
        XCTAssertEqual(try s.generate([.text("x")], params: p).tokens.count, 2)
    }

    func testTwoSessionsOnTwoThreads() throws {
        let m = try model()
        var p = GenerationParams(); p.maxTokens = 8; p.ignoreEOS = true
        let expected = try Session(model: m, threads: 1).generate([.text("Parallel")], params: p).tokens
        var got = [[Int32]](repeating: [], count: 3)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 3) { i in
            let t = (try? Session(model: m, threads: 1).generate([.text("Parallel")], params: p).tokens) ?? []
            lock.lock(); got[i] = t; lock.unlock()
        }
        for g in got { XCTAssertEqual(g, expected) }
    }
}

final class LoadFromMemoryTests: XCTestCase {
    /// Asset packs: the same checkpoint from bytes in memory (copied and borrowed) generates the
    /// same ids as from the directory.
    func testMemoryLoadMatchesDirectory() throws {
        let dir = Paths.checkpoint("mm-bf16-sharded")
        var p = GenerationParams(); p.maxTokens = 6; p.ignoreEOS = true
        let fromDir = try Session(model: try Model.load(directory: dir), threads: 1).generate([.text("Hi")], params: p)
        var blobs: [String: Blob] = [:]
        var keep: [Data] = []
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
            let d = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f))
            keep.append(d)
            blobs[f] = try d.withUnsafeBytes { try Blob.copy($0.baseAddress, count: $0.count) }
        }
        let m = try Model.load(files: CheckpointFiles(memory: blobs))
        let fromMem = try Session(model: m, threads: 1).generate([.text("Hi")], params: p)
        XCTAssertEqual(fromDir.tokens, fromMem.tokens)
        XCTAssertEqual(fromDir.promptTokens, fromMem.promptTokens)
        // A missing file is named.
        blobs["config.json"] = nil
        XCTAssertThrowsError(try Model.load(files: CheckpointFiles(memory: blobs))) { e in
            XCTAssertTrue("\(e)".contains("config.json"))
        }
    }
}
