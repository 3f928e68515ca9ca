// The visualizer: MetaMorph visual tokens -> RGB picture.
//   adapter(tokens) -> [rows][768], zero-padded to 77 rows = prompt_embeds; negative = zeros
//   latents (given, or seeded Gaussian noise) * init_noise_sigma
//   for t in timesteps: noise = unet([latents, latents], t, [zeros, cond]);
//                       noise = uncond + g * (cond - uncond); latents = scheduler.step(...)
//   image = vae.decode(latents / latent_scale); rgb = round(clamp(image / 2 + 0.5, 0, 1) * 255)
// This is StableDiffusionPipeline(prompt_embeds=..., negative_prompt_embeds=zeros) of diffusers
// as driven by MetaMorph's inference/demo.py. Directory layout: docs/visualizer.md.
#if canImport(Glibc)
import Glibc
#endif
import MetamorphCore
import MetamorphKernels

/// A rendered picture: tightly packed RGB8 rows, plus the float image before quantisation
/// (HWC, in [0, 1]: what diffusers returns for output_type "np").
public struct RenderedImage: Sendable {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]
    public let pixels: [Float]
}

/// The seeded generator for initial latents: xoshiro256** seeded through SplitMix64, standard
/// normals by Box-Muller (both outputs of a pair used, in order). It cannot reproduce torch's
/// generator: for bit-parity with a diffusers run pass that run's latents instead.
public struct LatentNoise {
    var rng: Rng
    public init(seed: UInt64) { rng = Rng(seed: seed) }
    public mutating func next() -> UInt64 { rng.next() }
    /// Uniform in (0, 1]: 53 random bits.
    mutating func uniform() -> Double { (Double(next() >> 11) + 1) * 0x1p-53 }
    public mutating func normals(_ n: Int) -> [Float] {
        var out = [Float](repeating: 0, count: n)
        var i = 0
        while i < n {
            let u1 = uniform(), u2 = uniform()
            let r = (-2 * log(u1)).squareRoot(), a = 2 * Double.pi * u2
            out[i] = Float(r * cos(a)); i += 1
            if i < n { out[i] = Float(r * sin(a)); i += 1 }
        }
        return out
    }
}

public final class Visualizer: @unchecked Sendable {
    public let directory: String
    public let adapter: Adapter
    public let unet: UNet
    public let vae: VAEDecoder
    /// Latents are divided by this before the VAE (visualizer.json "latent_scale", else the VAE
    /// config's scaling_factor, 0.18215 for SD1.5).
    public let latentScale: Float
    public let defaultSteps: Int
    public let defaultGuidance: Float
    /// Rows of the condition (77: CLIP's context length in SD1.5).
    public let conditionLength: Int
    let schedulerJSON: JSON
    let schedulerKind: SchedulerKind

    public init(directory: String) throws {
        self.directory = directory
        let files = CheckpointFiles(directory: directory)
        var scale: Double? = nil, steps = 50, guidance = 7.5, condLen = 77
        if files.exists("visualizer.json") {
            let r = try ConfigReader(try files.open("visualizer.json").json(what: "visualizer.json"), file: directory + "/visualizer.json")
            if r.has("latent_scale") { scale = try r.double("latent_scale", 0.18215) }
            steps = try r.int("steps", steps)
            guidance = try r.double("guidance", guidance)
            condLen = try r.int("condition_length", condLen)
        }
        adapter = try Adapter(directory: directory + "/adapter")
        unet = try UNet(directory: directory + "/unet")
        vae = try VAEDecoder(directory: directory + "/vae")
        latentScale = scale.map { Float($0) } ?? vae.config.scalingFactor
        defaultSteps = steps; defaultGuidance = Float(guidance); conditionLength = condLen
        (schedulerJSON, schedulerKind) = try Visualizer.readScheduler(directory + "/scheduler")
        guard adapter.config.outputDim == unet.config.crossAttentionDim else {
            throw MMError.format("\(directory): adapter output_dim \(adapter.config.outputDim) != unet cross_attention_dim \(unet.config.crossAttentionDim)")
        }
        guard unet.config.outChannels == vae.config.latentChannels, unet.config.inChannels == vae.config.latentChannels else {
            throw MMError.format("\(directory): unet channels do not match the VAE's latent_channels")
        }
    }

    static func readScheduler(_ dir: String) throws -> (JSON, SchedulerKind) {
        let files = CheckpointFiles(directory: dir)
        let j = try files.open("scheduler_config.json").json(what: dir + "/scheduler_config.json")
        guard let cls = j["_class_name"]?.string else { throw MMError.format("\(dir)/scheduler_config.json: no _class_name") }
        guard let k = SchedulerKind(className: cls) else {
            throw MMError.unsupported("\(dir)/scheduler_config.json: scheduler \(cls) is not supported (PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler)")
        }
        return (j, k)
    }

    /// nil: the scheduler of scheduler/scheduler_config.json; "pndm" | "ddim" | "euler": that class
    /// built from the same config (diffusers' from_config); anything else: a subfolder of the
    /// visualizer directory holding its own scheduler_config.json.
    public func makeScheduler(_ name: String?) throws -> Scheduler {
        guard let name else { return try Scheduler(kind: schedulerKind, config: schedulerJSON, file: directory + "/scheduler/scheduler_config.json") }
        if let k = SchedulerKind(rawValue: name.lowercased()) {
            return try Scheduler(kind: k, config: schedulerJSON, file: directory + "/scheduler/scheduler_config.json")
        }
        guard !name.isEmpty, !name.contains("/"), name != "..", name != "." else {
            throw MMError.invalidArgument("scheduler \"\(name)\": expected pndm, ddim, euler or a subfolder name")
        }
        let dir = directory + "/" + name
        guard access(dir + "/scheduler_config.json", R_OK) == 0 else {
            throw MMError.invalidArgument("scheduler \"\(name)\": not pndm, ddim or euler, and \(dir)/scheduler_config.json does not exist")
        }
        let (j, k) = try Visualizer.readScheduler(dir)
        return try Scheduler(kind: k, config: j, file: dir + "/scheduler_config.json")
    }

    /// Latent grid side (unet sample_size) and picture side (times the VAE's 2^(blocks-1)).
    public var latentSize: Int { unet.config.sampleSize }
    public var imageSize: Int { unet.config.sampleSize * vae.config.scaleFactor }
    public var latentChannels: Int { unet.config.inChannels }

    /// prompt_embeds: adapter output zero-padded to conditionLength rows: [conditionLength][cross_attention_dim].
    public func condition(visualTokens: [Float], count: Int, dim: Int, threads: Int) throws -> [Float] {
        guard dim == adapter.config.inputDim else {
            throw MMError.invalidArgument("visual tokens have dim \(dim) but the adapter expects \(adapter.config.inputDim)")
        }
        guard count > 0, visualTokens.count == count * dim else {
            throw MMError.invalidArgument("visual tokens: \(visualTokens.count) floats is not \(count) x \(dim)")
        }
        let rows = adapter.outputRows(inputCount: count), e = adapter.config.outputDim
        guard rows <= conditionLength else {
            throw MMError.invalidArgument("the adapter produced \(rows) rows; at most \(conditionLength) fit the condition")
        }
        var c = try adapter(visualTokens, count: count, threads: threads)
        c += [Float](repeating: 0, count: (conditionLength - rows) * e)
        return c
    }

    /// The denoising loop from given latents (already scaled by init_noise_sigma is NOT expected:
    /// pass raw N(0, 1) latents like diffusers' `latents=` argument). Returns the final latents.
    /// onStep(i, latents) after scheduler step i (0-based) with the scheduler's output latents,
    /// like diffusers' callback_on_step_end `latents`.
    public func denoise(condition cond: [Float], latents: [Float], steps: Int, guidance: Float, scheduler: String?,
                        threads: Int, progress: ((Int, Int) -> Bool)?,
                        onStep: ((Int, [Float]) -> Void)? = nil) throws -> [Float] {
        let s = try makeScheduler(scheduler)
        try s.setTimesteps(steps)
        let ls = latentSize, lc = latentChannels, per = lc * ls * ls
        guard latents.count == per else { throw MMError.invalidArgument("latents: \(latents.count) floats, expected 1 x \(lc) x \(ls) x \(ls)") }
        let m = conditionLength, e = unet.config.crossAttentionDim
        guard cond.count == m * e else { throw MMError.invalidArgument("condition: \(cond.count) floats, expected \(m) x \(e)") }
        let cfg = guidance > 1
        let context = cfg ? [Float](repeating: 0, count: m * e) + cond : cond
        let sigma0 = s.initNoiseSigma
        var x = latents.map { $0 * sigma0 }
        let total = s.timesteps.count
        for (i, t) in s.timesteps.enumerated() {
            var inp = cfg ? x + x : x
            s.scaleModelInput(&inp, stepIndex: i)
            let out = try unet.forward(sample: inp, batch: cfg ? 2 : 1, height: ls, width: ls, timestep: t,
                                       context: context, contextLength: m, threads: threads)
            var noise: [Float]
            if cfg {
                noise = [Float](repeating: 0, count: per)
                for j in 0..<per { let u = out[j], c = out[per + j]; noise[j] = u + guidance * (c - u) }
            } else { noise = out }
            x = s.step(modelOutput: noise, stepIndex: i, sample: x)
            onStep?(i, x)
            if let progress, !progress(i + 1, total) { throw MMError(.cancelled, "render cancelled at step \(i + 1) of \(total)") }
        }
        return x
    }

    /// VAE decode of final latents (divided by latentScale here) to an RGB8 picture.
    public func decode(latents: [Float], threads: Int) throws -> RenderedImage {
        let ls = latentSize, f = vae.config.scaleFactor
        let z = latents.map { $0 / latentScale }
        let img = try vae.decode(z, batch: 1, height: ls, width: ls, threads: threads)
        let H = ls * f, W = ls * f, C = vae.config.outChannels
        guard C == 3 else { throw MMError.unsupported("VAE out_channels \(C): only RGB (3) pictures are produced") }
        var px = [Float](repeating: 0, count: H * W * 3)
        var rgb = [UInt8](repeating: 0, count: H * W * 3)
        for c in 0..<3 { for y in 0..<H { for x in 0..<W {
            let v = min(max(img[(c * H + y) * W + x] / 2 + 0.5, 0), 1)
            px[(y * W + x) * 3 + c] = v
            rgb[(y * W + x) * 3 + c] = UInt8((v * 255).rounded(.toNearestOrEven))
        } } }
        return RenderedImage(width: W, height: H, rgb: rgb, pixels: px)
    }

    /// Visual tokens [count][dim] -> picture. steps / guidance as in diffusers
    /// (guidance <= 1 disables classifier-free guidance). latents: [1][4][s][s] float32 N(0, 1)
    /// noise (s = unet sample_size), or nil for seeded noise from LatentNoise(seed:).
    /// progress(done, total) after each UNet evaluation; return false to cancel (MMError .cancelled).
    public func render(visualTokens: [Float], count: Int, dim: Int, steps: Int, guidance: Float, scheduler: String?,
                       latents: [Float]?, seed: UInt64, threads: Int, progress: ((Int, Int) -> Bool)?) throws -> RenderedImage {
        let th = max(1, threads)
        // Bad numbers would silently turn the whole picture into NaN: refuse them up front.
        guard steps >= 1, steps <= 1000 else { throw MMError.invalidArgument("steps must be 1...1000 (got \(steps))") }
        guard guidance.isFinite, guidance >= 0, guidance <= 100 else {
            throw MMError.invalidArgument("guidance must be a finite number in 0...100 (got \(guidance))")
        }
        if let i = visualTokens.firstIndex(where: { !$0.isFinite }) {
            throw MMError.invalidArgument("visual token value \(i) is \(visualTokens[i]) (NaN or infinite)")
        }
        if let latents, let i = latents.firstIndex(where: { !$0.isFinite }) {
            throw MMError.invalidArgument("latent value \(i) is \(latents[i]) (NaN or infinite)")
        }
        let cond = try condition(visualTokens: visualTokens, count: count, dim: dim, threads: th)
        let per = latentChannels * latentSize * latentSize
        var noise = LatentNoise(seed: seed)
        let lat = latents ?? noise.normals(per)
        let x = try denoise(condition: cond, latents: lat, steps: steps, guidance: guidance, scheduler: scheduler, threads: th, progress: progress)
        return try decode(latents: x, threads: th)
    }
}

/// A small .npy reader for the CLI and tests: little-endian float32 / float64 / float16, C order.
public enum NPY {
    public static func readFloat32(path: String) throws -> (shape: [Int], data: [Float]) {
        let blob = try Blob.open(path: path, mmap: false)
        let b = blob.toArray()
        guard b.count > 10, b[0] == 0x93, b[1] == 0x4E, b[2] == 0x55, b[3] == 0x4D, b[4] == 0x50, b[5] == 0x59 else {
            throw MMError.format("\(path): not an .npy file")
        }
        let hlen: Int, start: Int
        if b[6] == 1 { hlen = Int(b[8]) | Int(b[9]) << 8; start = 10 } else {
            guard b.count > 12 else { throw MMError.format("\(path): truncated") }
            hlen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        }
        guard start + hlen <= b.count else { throw MMError.format("\(path): truncated header") }
        let header = String(decoding: b[start..<(start + hlen)], as: UTF8.self)
        if header.contains("'fortran_order': True") { throw MMError.unsupported("\(path): Fortran-order arrays are not supported") }
        let parts = header.split(separator: "(", maxSplits: 1, omittingEmptySubsequences: false)
        guard header.contains("'shape'"), parts.count == 2, let close = parts[1].firstIndex(of: ")") else {
            throw MMError.format("\(path): no shape in header")
        }
        let shape = parts[1][..<close].split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }
        let n = shape.reduce(1, *)
        let body = Array(b[(start + hlen)...])
        var out = [Float](repeating: 0, count: n)
        if header.contains("'<f4'") {
            guard body.count >= 4 * n else { throw MMError.format("\(path): truncated data") }
            out.withUnsafeMutableBytes { $0.copyBytes(from: body[0..<(4 * n)]) }
        } else if header.contains("'<f8'") {
            guard body.count >= 8 * n else { throw MMError.format("\(path): truncated data") }
            var d = [Double](repeating: 0, count: n)
            d.withUnsafeMutableBytes { $0.copyBytes(from: body[0..<(8 * n)]) }
            out = d.map { Float($0) }
        } else if header.contains("'<f2'") {
            guard body.count >= 2 * n else { throw MMError.format("\(path): truncated data") }
            body.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { mmk_convert_to_f32(1, src.baseAddress, $0.baseAddress, Int64(n)) } }
        } else {
            throw MMError.unsupported("\(path): dtype in \(header) is not supported (<f4, <f8, <f2)")
        }
        return (shape, out)
    }
}
