// `metamorph tokenize`: tokenizer checks and benchmarks.
//
//   metamorph tokenize --tokenizer PATH --jsonl < in.jsonl
//       reads JSON lines with a "text" field; writes one line per input:
//       {"ids": [...], "decoded": "..."} (ids without BOS/template; decoded keeps
//       special tokens), or {"error": "..."} for a bad line.
//   metamorph tokenize --tokenizer PATH --text "..."      ids of one text
//   metamorph tokenize --tokenizer PATH --prompt "..." [--images N] [--raw]
//       MetaMorph prompt ids (images as -200)
//   metamorph tokenize --tokenizer PATH --bench FILE
//       encodes FILE's documents (separated by "\u{1E}\n") single-threaded, prints JSON stats.
import ArgumentParser
import Foundation
import MetamorphTokenizer

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenize text with a MetaMorph/LLaMA-3 tokenizer.json.")

    @Option(name: .long, help: "tokenizer.json, or a checkpoint directory containing it.")
    var tokenizer: String

    @Flag(name: .long, help: "Read JSON lines with a \"text\" field from stdin.")
    var jsonl = false

    @Option(name: .long, help: "Encode this text and print its ids.")
    var text: String?

    @Option(name: .long, help: "Build a MetaMorph chat prompt from this user message and print its ids.")
    var prompt: String?

    @Option(name: .long, help: "Number of images attached to --prompt.")
    var images: Int = 0

    @Flag(name: .long, help: "With --prompt: use the text as is (no chat template).")
    var raw = false

    @Flag(name: .long, help: "Do not add <image_start>/<image_end> to a plain LLaMA-3 vocabulary.")
    var noImageTokens = false

    @Option(name: .long, help: ArgumentHelp("Benchmark: encode the documents of FILE.", visibility: .hidden))
    var bench: String?

    func run() throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let tok: Tokenizer
        do {
            tok = try Tokenizer(path: tokenizer, options: TokenizerOptions(addMetaMorphImageTokens: !noImageTokens))
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if let bench { try runBench(tok, bench, loadSeconds); return }
        if jsonl { runJSONL(tok); return }
        if let text {
            print(tok.encode(text).map(String.init).joined(separator: " "))
            return
        }
        if let prompt {
            let b = PromptBuilder(tokenizer: tok)
            let pieces = raw ? b.raw(prompt) : b.chat(message: prompt, imageCount: images)
            print(PromptBuilder.flatten(pieces).map(String.init).joined(separator: " "))
            return
        }
        throw ValidationError("give one of --jsonl, --text, --prompt, --bench")
    }

    func runJSONL(_ tok: Tokenizer) {
        let input = FileHandle.standardInput.readDataToEndOfFile()
        var out: [UInt8] = []
        out.reserveCapacity(input.count * 3)
        let bytes = [UInt8](input)
        var start = 0
        func flush() {
            if out.count > 1 << 20 {
                FileHandle.standardOutput.write(Data(out))
                out.removeAll(keepingCapacity: true)
            }
        }
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            var line = Array(bytes[start ..< end])
            start = end + 1
            if line.last == 0x0D { line.removeLast() }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            do {
                guard let text = try TokenizerJSON.stringField(line, "text") else {
                    throw TokenizerError.missingField("text")
                }
                let ids = try tok.encode(utf8: text, addSpecialTokens: false)
                let decoded = try tok.decode(ids, skipSpecialTokens: false)
                out.append(contentsOf: Array("{\"ids\": [".utf8))
                for (i, id) in ids.enumerated() {
                    if i > 0 { out.append(contentsOf: [0x2C, 0x20]) }
                    out.append(contentsOf: Array(String(id).utf8))
                }
                out.append(contentsOf: Array("], \"decoded\": ".utf8))
                TokenizerJSON.appendQuoted(decoded, to: &out)
                out.append(contentsOf: Array("}\n".utf8))
            } catch {
                out.append(contentsOf: Array("{\"error\": ".utf8))
                TokenizerJSON.appendQuoted("\(error)", to: &out)
                out.append(contentsOf: Array("}\n".utf8))
            }
            flush()
        }
        FileHandle.standardOutput.write(Data(out))
    }

    func runBench(_ tok: Tokenizer, _ path: String, _ loadSeconds: Double) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path)")
        }
        let bytes = [UInt8](data)
        // Documents are separated by "\u{1E}\n".
        var docs: [Range<Int>] = []
        var s = 0
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x1E && i + 1 < bytes.count && bytes[i + 1] == 0x0A {
                docs.append(s ..< i)
                i += 2
                s = i
            } else {
                i += 1
            }
        }
        if s < bytes.count { docs.append(s ..< bytes.count) }
        var tokens = 0
        var checksum: UInt64 = 0
        let t0 = DispatchTime.now().uptimeNanoseconds
        try bytes.withUnsafeBufferPointer { buf in
            for d in docs {
                let ids = try tok.encode(utf8: UnsafeBufferPointer(rebasing: buf[d]), addSpecialTokens: false)
                tokens += ids.count
                for id in ids { checksum = (checksum &* 31) &+ UInt64(id) }
            }
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let textBytes = docs.reduce(0) { $0 + $1.count }
        print("{\"bytes\": \(textBytes), \"docs\": \(docs.count), \"tokens\": \(tokens), \"checksum\": \(checksum), "
            + "\"seconds\": \(secs), \"mb_per_s\": \(Double(textBytes) / 1e6 / secs), \"load_seconds\": \(loadSeconds)}")
    }
}
