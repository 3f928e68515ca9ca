// `metamorph bench`: prefill and decode speed, load time and peak memory on a checkpoint.
import ArgumentParser
import MetamorphCore
import MetamorphRuntime
#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure prefill and decode tokens/s, load time and peak RSS.")

    @Option(help: "Checkpoint directory.") var model: String
    @Option(help: "Compute threads (repeatable, e.g. --threads 1 --threads 2).") var threads: [Int] = []
    @Option(name: .customLong("prompt-tokens")) var promptTokens: Int = 512
    @Option(name: .customLong("gen-tokens")) var genTokens: Int = 128
    @Option(help: "Repetitions; the median is reported.") var reps: Int = 1
    @Flag(help: "Print JSON lines instead of a table.") var json = false

    func run() throws {
        let m = try cliTry { try Model.load(directory: model) }
        let vocab = m.config.vocabSize
        var rng = Rng(seed: 1234)
        // Random ids away from the special range so the prompt looks like text to the model.
        let ids = (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(min(vocab, 30000))) }
        let threadList = threads.isEmpty ? [defaultThreadCount()] : threads
        if !json { writeStdout("model \(model)\nload \(format1(m.loadMilliseconds)) ms\n") }
        for th in threadList {
            var pre: [Double] = [], dec: [Double] = []
            for _ in 0..<max(1, reps) {
                let s = try cliTry { try Session(model: m, contextLength: promptTokens + genTokens + 8, threads: th) }
                var p = GenerationParams()
                p.raw = true
                p.maxTokens = genTokens
                p.ignoreEOS = true
                p.seed = 0
                let r = try cliTry { try s.generate([.tokens(ids)], params: p) }
                pre.append(Double(r.timings.promptTokens) / (r.timings.promptMilliseconds / 1000))
                // The first generated token comes from the prefill's logits: decode made n-1 forward passes.
                dec.append(Double(max(1, r.timings.generated - 1)) / (r.timings.generateMilliseconds / 1000))
            }
            let pp = median(pre), tg = median(dec)
            let rss = peakRSSMiB()
            if json {
                writeStdout("{\"threads\": \(th), \"prefill_tokens\": \(promptTokens), \"prefill_tok_s\": \(format1(pp)), \"decode_tokens\": \(genTokens), \"decode_tok_s\": \(format2(tg)), \"load_ms\": \(format1(m.loadMilliseconds)), \"peak_rss_mib\": \(format1(rss))}\n")
            } else {
                writeStdout("threads \(th): prefill \(format1(pp)) tok/s (\(promptTokens) tokens), decode \(format2(tg)) tok/s (\(genTokens) tokens), peak RSS \(format1(rss)) MiB\n")
            }
        }
    }
}

func median(_ a: [Double]) -> Double { let s = a.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
func format1(_ d: Double) -> String { String(Double(Int((d * 10).rounded())) / 10) }
func format2(_ d: Double) -> String { String(Double(Int((d * 100).rounded())) / 100) }
func peakRSSMiB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}
