// `metamorph run`: one user message in, the reply streamed out (or one JSON object).
import ArgumentParser
import MetamorphCore
import MetamorphRuntime
import MetamorphImageIO
import MetamorphVisualizer
#if canImport(Glibc)
import Glibc
#endif

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Generate a reply to a prompt.")

    @Option(help: "Checkpoint directory (config.json, safetensors, tokenizer.json). Default: the shipped models/shapes.") var model: String?
    @Option(help: "The user message (wrapped in the chat template unless --raw).") var prompt: String
    @Option(name: .customLong("max-tokens"), help: "Most positions to generate.") var maxTokens: Int = 256
    @Option(help: "0 = greedy.") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "0 = off.") var topK: Int = 0
    @Option(name: .customLong("top-p"), help: "1 = off.") var topP: Float = 1
    @Option(name: .customLong("min-p"), help: "0 = off.") var minP: Float = 0
    @Option(name: .customLong("repeat-penalty"), help: "1 = off.") var repeatPenalty: Float = 1
    @Option(help: "Sampling seed (default: random, printed with --json).") var seed: UInt64?
    @Option(name: .customLong("assistant-prefix"), help: "Text the reply is forced to begin with.") var assistantPrefix: String?
    @Option(name: .customLong("stop"), help: "Stop string (repeatable).") var stop: [String] = []
    @Flag(help: "Use the prompt as is (BOS added), no chat template.") var raw = false
    @Flag(help: "Print one JSON object instead of streaming.") var json = false
    @Option(name: .customLong("save-logits"), help: "Write the first generated position's logits as float32 .npy [vocab].") var saveLogits: String?
    @Option(name: .customLong("save-visual-tokens"), help: "Write generated visual tokens as float32 .npy [total_visual_tokens, mm_hidden].") var saveVisualTokens: String?
    @Option(name: .customLong("image"), help: "An image (PNG or JPEG) for the prompt (repeatable, in order).") var images: [String] = []
    @Option(name: .customLong("vision-tower"), help: "A separate SigLIP directory (vision_model.* weights).") var visionTower: String?
    @Option(name: .customLong("save-image-features"), help: "Write the projected image features as float32 .npy [n_images, num_image_tokens, hidden].") var saveImageFeatures: String?
    @Option(help: "A visualizer directory: render generated images to --out.") var visualizer: String?
    @Option(help: "PNG file for a generated image (several images: FILE-1.png, FILE-2.png ...).") var out: String?
    @Option(help: "Denoising steps (default: the visualizer's, 50).") var steps: Int?
    @Option(help: "Classifier-free guidance scale (default: the visualizer's, 7.5).") var guidance: Float?
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(name: .customLong("ctx"), help: "Context length (default min(max_position_embeddings, 4096)).") var ctx: Int = 0

    func run() throws {
        guard let dir = model ?? DefaultModel.directory() else {
            throw ValidationError("no --model DIR given and the default model (models/shapes, or $METAMORPH_MODEL) was not found")
        }
        var opts = LoadOptions()
        opts.visionTowerPath = visionTower
        let m = try cliTry { try Model.load(directory: dir, options: opts) }
        var parts: [PromptPart] = []
        for path in images { parts.append(.image(try loadImage(path))) }
        parts.append(.text(prompt))
        let s = try cliTry { try Session(model: m, contextLength: ctx, threads: threads ?? defaultThreadCount()) }
        var p = GenerationParams()
        p.maxTokens = maxTokens
        p.sampling.temperature = temperature
        p.sampling.topK = topK
        p.sampling.topP = topP
        p.sampling.minP = minP
        p.sampling.repeatPenalty = repeatPenalty
        p.seed = seed
        p.raw = raw
        p.assistantPrefix = assistantPrefix
        p.stopStrings = stop
        p.keepLogits = saveLogits != nil
        p.keepImageFeatures = saveImageFeatures != nil
        let streaming = !json
        if streaming, let prefix = assistantPrefix { writeStdout(prefix) }
        let r = try cliTry {
            try s.generate(parts, params: p) { text, _ in
                if streaming { writeStdout(text) }
                return true
            }
        }
        if let path = saveLogits, let l = r.firstLogits { try cliTry { try writeNpy(path, l, shape: [l.count]) } }
        if let path = saveImageFeatures {
            let hidden = m.config.hiddenSize
            let all = r.imageFeatures.flatMap { $0 }
            let perImage = r.imageFeatures.first.map { $0.count / hidden } ?? (m.vision?.tokensPerImage ?? 0)
            try cliTry { try writeNpy(path, all, shape: [r.imageFeatures.count, perImage, hidden]) }
        }
        if let path = saveVisualTokens {
            // All images in order, an unfinished last image included.
            let dim = r.images.first?.dim ?? (m.config.mm?.mmHiddenSize ?? 0)
            let all = r.images.flatMap { $0.tokens }
            try cliTry { try writeNpy(path, all, shape: [dim == 0 ? 0 : all.count / dim, dim]) }
        }
        // --out without --visualizer: the model's own visualizer (DIR/visualizer) when it has one.
        if let vdir = visualizer ?? (out != nil ? DefaultModel.visualizer(forModel: dir) : nil) {
            try renderImages(r, visualizerDir: vdir, threads: threads ?? defaultThreadCount())
        } else if out != nil {
            fputs("metamorph: warning: --out needs --visualizer DIR (the model has no visualizer/ folder); no picture written\n", stderr)
        }
        if json {
            let t = r.timings
            let obj = JSON.obj([
                ("prompt_token_ids", .array(r.promptTokens.map { .number(Double($0)) })),
                ("token_ids", .array(r.tokens.map { .number(Double($0)) })),
                ("text", .string(r.text)),
                ("stop_reason", .string(r.stopReason.name)),
                ("images", .array(r.images.map { JSON.obj([("n_tokens", .number(Double($0.count))), ("complete", .bool($0.complete))]) })),
                ("seed", r.seed <= UInt64(Int64.max) ? .integer(Int64(r.seed)) : .string(String(r.seed))),
                ("timings", JSON.obj([
                    ("load_ms", .number(m.loadMilliseconds.rounded())),
                    ("prompt_tokens", .number(Double(t.promptTokens))),
                    ("prompt_ms", .number(t.promptMilliseconds.rounded())),
                    ("generated_tokens", .number(Double(t.generated))),
                    ("generate_ms", .number(t.generateMilliseconds.rounded())),
                ])),
            ])
            writeStdout(obj.serialized + "\n")
        } else {
            writeStdout("\n")
        }
    }
}

extension RunCommand {
    /// Render every complete generated image to --out (FILE.png, or FILE-1.png, FILE-2.png ...).
    func renderImages(_ r: GenerationResult, visualizerDir: String, threads: Int) throws {
        guard let out else { throw ValidationError("--visualizer needs --out FILE.png") }
        let complete = r.images.filter { $0.complete }
        if complete.isEmpty {
            fputs("metamorph: the reply holds no complete image; nothing rendered\n", stderr)
            return
        }
        let v = try cliTry { try Visualizer(directory: visualizerDir) }
        let tty = isatty(2) != 0
        for (i, img) in complete.enumerated() {
            let path = complete.count == 1 ? out : numberedPath(out, i + 1)
            let pic = try cliTry {
                try v.render(visualTokens: img.tokens, count: img.count, dim: img.dim, steps: steps ?? v.defaultSteps,
                             guidance: guidance ?? v.defaultGuidance, scheduler: nil, latents: nil, seed: (seed ?? 0) &+ UInt64(i),
                             threads: threads) { step, total in
                    if tty {
                        let w = 30, f = w * step / max(total, 1)
                        fputs("\r\(path) [" + String(repeating: "#", count: f) + String(repeating: "-", count: w - f) + "] \(step)/\(total)", stderr)
                        if step == total { fputs("\n", stderr) }
                    }
                    return true
                }
            }
            var err = [CChar](repeating: 0, count: 256)
            let rc = pic.rgb.withUnsafeBufferPointer { mmio_write_png(path, $0.baseAddress, Int32(pic.width), Int32(pic.height), &err, err.count) }
            if rc != 0 { fputs("metamorph: error: \(String(cString: err))\n", stderr); throw ExitCode(1) }
        }
    }
}

/// "cat.png" -> "cat-2.png".
func numberedPath(_ path: String, _ n: Int) -> String {
    if let dot = path.lastIndex(of: "."), !path[dot...].contains("/") {
        return String(path[..<dot]) + "-\(n)" + String(path[dot...])
    }
    return path + "-\(n)"
}

/// Decode a PNG or JPEG through the system libraries into RGB8.
func loadImage(_ path: String) throws -> ImageInput {
    var rgb: UnsafeMutablePointer<UInt8>? = nil
    var w: Int32 = 0, h: Int32 = 0
    var err = [CChar](repeating: 0, count: 512)
    if mmio_load_rgb(path, &rgb, &w, &h, &err, err.count) != 0 {
        fputs("metamorph: error: \(String(cString: err))\n", stderr)
        throw ExitCode(1)
    }
    defer { free(rgb) }
    return ImageInput(width: Int(w), height: Int(h), rgb: Array(UnsafeBufferPointer(start: rgb, count: Int(w) * Int(h) * 3)))
}

func defaultThreadCount() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

func writeStdout(_ s: String) {
    var s = s
    s.withUTF8 { b in _ = fwrite(b.baseAddress, 1, b.count, stdout) }
    fflush(stdout)
}

/// Engine errors become a one-line message on stderr and exit code 1.
func cliTry<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as MMError {
        fputs("metamorph: error: \(e.message)\n", stderr)
        throw ExitCode(1)
    }
}

/// A float32 little-endian .npy (format version 1.0).
func writeNpy(_ path: String, _ data: [Float], shape: [Int]) throws {
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
    let total = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
    let hl = UInt16(header.utf8.count)
    bytes += [UInt8(hl & 0xff), UInt8(hl >> 8)] + Array(header.utf8)
    guard let f = fopen(path, "wb") else { throw MMError.io("cannot write \(path)") }
    defer { fclose(f) }
    var ok = fwrite(bytes, 1, bytes.count, f) == bytes.count
    data.withUnsafeBytes { ok = ok && fwrite($0.baseAddress, 1, $0.count, f) == $0.count }
    if !ok { throw MMError.io("short write to \(path)") }
}
