// `metamorph render`: MetaMorph visual tokens (.npy) -> PNG through the visualizer
// (adapter + Stable Diffusion 1.5 UNet + VAE decoder + scheduler). See docs/visualizer.md.
import ArgumentParser
import MetamorphCore
import MetamorphImageIO
import MetamorphRuntime
import MetamorphVisualizer
#if canImport(Glibc)
import Glibc
#endif

struct RenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render", abstract: "Render visual tokens to a PNG with the MetaMorph visualizer (adapter + SD1.5 UNet + VAE).")

    @Option(help: "Visualizer directory (the output of tools/convert_visualizer.py). Default: the shipped models/shapes/visualizer.") var visualizer: String?
    @Option(name: .customLong("visual-tokens"), help: "float32 .npy of visual tokens [64, 1152] (or [n*64, 1152], see --image-index).") var visualTokens: String
    @Option(help: "float32 .npy initial latents [1, 4, s, s] (N(0,1) noise; default: seeded noise).") var latents: String?
    @Option(help: "Denoising steps (default: visualizer.json, 50).") var steps: Int?
    @Option(help: "Classifier-free guidance scale (default: visualizer.json, 7.5; <= 1 disables guidance).") var guidance: Float?
    @Option(help: "pndm | ddim | euler (built from the visualizer's scheduler config) or a subfolder with its own scheduler_config.json.") var scheduler: String?
    @Option(help: "Seed of the initial noise when --latents is not given.") var seed: UInt64 = 0
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(name: .customLong("image-index"), help: "Which group of 64 tokens to render when the file holds several images.") var imageIndex: Int = 0
    @Flag(help: "Print load / adapter / denoise / decode times to stderr.") var timings = false
    @Option(help: "Output PNG path.") var out: String

    func run() throws {
        let th = threads ?? defaultThreadCount()
        let t0 = monotonicMilliseconds()
        guard let vdir = visualizer ?? DefaultModel.directory().flatMap(DefaultModel.visualizer(forModel:)) else {
            throw ValidationError("no --visualizer DIR given and the default model's visualizer (models/shapes/visualizer) was not found")
        }
        let v = try cliTry { try Visualizer(directory: vdir) }
        let tLoad = monotonicMilliseconds()
        let tok = try cliTry { try NPY.readFloat32(path: visualTokens) }
        guard let dim = tok.shape.last, dim > 0, tok.data.count % dim == 0 else {
            fputs("metamorph: error: \(visualTokens): expected a [tokens, dim] array\n", stderr); throw ExitCode(1)
        }
        var count = tok.data.count / dim
        var data = tok.data
        if count > v.conditionLength {
            guard count % 64 == 0, imageIndex >= 0, imageIndex < count / 64 else {
                fputs("metamorph: error: \(visualTokens) holds \(count) tokens: pick a group of 64 with --image-index (0..<\(count / 64))\n", stderr)
                throw ExitCode(1)
            }
            data = Array(data[(imageIndex * 64 * dim)..<((imageIndex + 1) * 64 * dim)])
            count = 64
        }
        var lat: [Float]
        if let latents {
            lat = try cliTry { try NPY.readFloat32(path: latents) }.data
        } else {
            var g = LatentNoise(seed: seed)
            lat = g.normals(v.latentChannels * v.latentSize * v.latentSize)
        }
        let nSteps = steps ?? v.defaultSteps, g = guidance ?? v.defaultGuidance
        let cond = try cliTry { try v.condition(visualTokens: data, count: count, dim: dim, threads: th) }
        let tCond = monotonicMilliseconds()
        let tty = isatty(2) != 0
        var last = monotonicMilliseconds()
        var stepMs: [Double] = []
        let x = try cliTry {
            try v.denoise(condition: cond, latents: lat, steps: nSteps, guidance: g, scheduler: scheduler, threads: th, progress: { i, n in
                let now = monotonicMilliseconds(); stepMs.append(now - last); last = now
                if tty {
                    let w = 30, f = w * i / max(n, 1)
                    let bar = String(repeating: "#", count: f) + String(repeating: "-", count: w - f)
                    fputs("\r[\(bar)] \(i)/\(n) \(fmt(stepMs.last! / 1000)) s/step", stderr)
                    if i == n { fputs("\n", stderr) }
                }
                return true
            })
        }
        let tDen = monotonicMilliseconds()
        let img = try cliTry { try v.decode(latents: x, threads: th) }
        let tDec = monotonicMilliseconds()
        var err = [CChar](repeating: 0, count: 256)
        let rc = img.rgb.withUnsafeBufferPointer { mmio_write_png(out, $0.baseAddress, Int32(img.width), Int32(img.height), &err, err.count) }
        if rc != 0 { fputs("metamorph: error: \(String(cString: err))\n", stderr); throw ExitCode(1) }
        if timings {
            let med = stepMs.sorted()[stepMs.count / 2]
            fputs("timings: load_ms=\(fmt(tLoad - t0)) adapter_ms=\(fmt(tCond - tLoad)) unet_evals=\(stepMs.count) denoise_ms=\(fmt(tDen - tCond)) median_step_ms=\(fmt(med)) decode_ms=\(fmt(tDec - tDen)) threads=\(th)\n", stderr)
        }
    }
}


private func fmt(_ x: Double) -> String { String(Double(Int((x * 100).rounded())) / 100) }
