// Noise schedulers, re-implemented from diffusers' behaviour (PNDMScheduler with skip_prk_steps,
// DDIMScheduler with eta 0, EulerDiscreteScheduler), built from a scheduler_config.json the way
// diffusers' `Class.from_config(config)` does: keys the class knows are taken, the others keep
// that class's defaults. Scalars are float32 like diffusers' torch tensors; the Euler sigma
// interpolation runs in float64 like numpy.
#if canImport(Glibc)
import Glibc
#endif
import MetamorphCore

public enum SchedulerKind: String, Sendable {
    case pndm, ddim, euler
    public var className: String {
        switch self { case .pndm: return "PNDMScheduler"; case .ddim: return "DDIMScheduler"; case .euler: return "EulerDiscreteScheduler" }
    }
    public init?(className: String) {
        switch className {
        case "PNDMScheduler": self = .pndm
        case "DDIMScheduler": self = .ddim
        case "EulerDiscreteScheduler": self = .euler
        default: return nil
        }
    }
}

public final class Scheduler {
    public let kind: SchedulerKind
    public let numTrainTimesteps: Int
    public let predictionType: String
    public let timestepSpacing: String
    public let stepsOffset: Int
    let alphasCumprod: [Float]
    let finalAlphaCumprod: Float
    let clipSample: Bool
    let clipSampleRange: Float
    public private(set) var timesteps: [Float] = []
    public private(set) var numInferenceSteps = 0
    var sigmas: [Float] = []
    // PNDM state
    var ets: [[Float]] = []
    var counter = 0
    var curSample: [Float]? = nil

    public init(kind: SchedulerKind, config j: JSON, file: String) throws {
        let r = try ConfigReader(j, file: file)
        self.kind = kind
        numTrainTimesteps = try r.int("num_train_timesteps", 1000)
        let betaStart = try r.double("beta_start", 0.0001), betaEnd = try r.double("beta_end", 0.02)
        let schedule = try r.string("beta_schedule", "linear")!
        predictionType = try r.string("prediction_type", "epsilon")!
        guard ["epsilon", "v_prediction"].contains(predictionType) else {
            throw MMError.unsupported("\(file): prediction_type \(predictionType) is not supported (epsilon, v_prediction)")
        }
        let defaultSpacing = kind == .euler ? "linspace" : "leading"
        timestepSpacing = try r.string("timestep_spacing", defaultSpacing)!
        guard ["leading", "trailing", "linspace"].contains(timestepSpacing) else {
            throw MMError.unsupported("\(file): timestep_spacing \(timestepSpacing) is not supported")
        }
        stepsOffset = try r.int("steps_offset", 0)
        let n = numTrainTimesteps
        guard n > 1 else { throw r.fail("num_train_timesteps must be > 1") }
        var betas: [Float]
        if let tb = j["trained_betas"], !tb.isNull {
            guard let a = tb.array else { throw r.fail("trained_betas must be a list") }
            betas = try a.map { guard let d = $0.double else { throw r.fail("trained_betas must hold numbers") }; return Float(d) }
            guard betas.count == n else { throw r.fail("trained_betas has \(betas.count) entries, expected \(n)") }
        } else {
            func linspace(_ a: Float, _ b: Float) -> [Float] {   // torch.linspace in float32
                let step = (b - a) / Float(n - 1)
                return (0..<n).map { i in i < n / 2 ? a + step * Float(i) : b - step * Float(n - 1 - i) }
            }
            switch schedule {
            case "linear": betas = linspace(Float(betaStart), Float(betaEnd))
            case "scaled_linear": betas = linspace(Float(betaStart.squareRoot()), Float(betaEnd.squareRoot())).map { $0 * $0 }
            default: throw MMError.unsupported("\(file): beta_schedule \(schedule) is not supported (linear, scaled_linear)")
            }
        }
        var ac = [Float](repeating: 0, count: n)
        var p: Float = 1
        for i in 0..<n { p *= (1 - betas[i]); ac[i] = p }
        alphasCumprod = ac
        switch kind {
        case .pndm, .ddim:
            let one = try r.bool("set_alpha_to_one", kind == .ddim)
            finalAlphaCumprod = one ? 1 : ac[0]
        case .euler:
            finalAlphaCumprod = ac[0]
        }
        clipSample = kind == .ddim ? try r.bool("clip_sample", true) : false
        clipSampleRange = Float(try r.double("clip_sample_range", 1))
        if kind == .pndm { guard try r.bool("skip_prk_steps", false) else {
            throw MMError.unsupported("\(file): PNDMScheduler needs skip_prk_steps = true (the Runge-Kutta warm-up is not implemented)")
        } }
        if kind == .ddim { try r.requireDefault("thresholding", bool: false); try r.requireDefault("rescale_betas_zero_snr", bool: false) }
        if kind == .euler {
            try r.requireDefault("interpolation_type", string: "linear")
            try r.requireDefault("use_karras_sigmas", bool: false)
            try r.requireDefault("use_exponential_sigmas", bool: false)
            try r.requireDefault("use_beta_sigmas", bool: false)
            try r.requireDefault("final_sigmas_type", string: "zero")
            try r.requireDefault("timestep_type", string: "discrete")
            try r.requireDefault("rescale_betas_zero_snr", bool: false)
        }
    }

    /// The multiplier of the initial noise (diffusers' init_noise_sigma), valid after setTimesteps.
    public var initNoiseSigma: Float {
        guard kind == .euler else { return 1 }
        let m = sigmas.max() ?? 1
        return timestepSpacing == "leading" ? (m * m + 1).squareRoot() : m
    }

    public func setTimesteps(_ steps: Int) throws {
        let n = numTrainTimesteps
        guard steps > 0, steps <= n else { throw MMError.invalidArgument("steps must be in 1...\(n), got \(steps)") }
        numInferenceSteps = steps
        ets = []; counter = 0; curSample = nil
        func npRound(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }
        func linspaceD(_ a: Double, _ b: Double, _ k: Int) -> [Double] {
            if k == 1 { return [a] }
            let step = (b - a) / Double(k - 1)
            var v = (0..<k).map { Double($0) * step + a }
            v[k - 1] = b
            return v
        }
        // ascending integer timesteps (before the final reversal), as doubles
        var asc: [Double]
        switch timestepSpacing {
        case "linspace": asc = linspaceD(0, Double(n - 1), steps).map(npRound)
        case "leading": asc = (0..<steps).map { Double($0 * (n / steps) + stepsOffset) }
        default: // trailing
            let ratio = Double(n) / Double(steps)
            var v: [Double] = []
            var x = Double(n)
            var k = 0
            while x > 0 { v.append(npRound(x) - 1); k += 1; x = Double(n) - Double(k) * ratio }
            asc = v.reversed()
        }
        switch kind {
        case .pndm:
            // skip_prk_steps: [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed, so the first step repeats
            var p = Array(asc.dropLast())
            if asc.count >= 2 { p.append(asc[asc.count - 2]) }
            p.append(asc[asc.count - 1])
            timesteps = p.reversed().map { Float($0) }
        case .ddim:
            timesteps = asc.reversed().map { Float($0) }
        case .euler:
            var ts: [Float]
            if timestepSpacing == "linspace" {
                ts = linspaceD(0, Double(n - 1), steps).map { Float($0) }.reversed()
            } else { ts = asc.reversed().map { Float($0) } }
            let full = alphasCumprod.map { (((1 - $0) / $0)).squareRoot() }
            var sg: [Float] = ts.map { t in
                let x = Double(t)
                if x <= 0 { return full[0] }
                if x >= Double(n - 1) { return full[n - 1] }
                let j = Int(x.rounded(.down))
                let a = Double(full[j]), b = Double(full[j + 1])
                return Float((b - a) / 1.0 * (x - Double(j)) + a)
            }
            sg.append(0)
            sigmas = sg
            timesteps = ts
        }
    }

    /// diffusers' scale_model_input: Euler divides by sqrt(sigma^2 + 1), the others return x.
    public func scaleModelInput(_ x: inout [Float], stepIndex i: Int) {
        guard kind == .euler else { return }
        let s = sigmas[i]
        let d = (s * s + 1).squareRoot()
        x.withUnsafeMutableBufferPointer { p in for j in 0..<p.count { p[j] = p[j] / d } }
    }

    func alpha(_ t: Int) -> Float { t >= 0 ? alphasCumprod[t] : finalAlphaCumprod }

    /// One scheduler step at timesteps[stepIndex]; returns the previous (less noisy) sample.
    public func step(modelOutput mo: [Float], stepIndex i: Int, sample: [Float]) -> [Float] {
        switch kind {
        case .pndm: return stepPLMS(mo, Int(timesteps[i]), sample)
        case .ddim: return stepDDIM(mo, Int(timesteps[i]), sample)
        case .euler: return stepEuler(mo, i, sample)
        }
    }

    func stepPLMS(_ modelOutput: [Float], _ t0: Int, _ sample0: [Float]) -> [Float] {
        let ratio = numTrainTimesteps / numInferenceSteps
        var timestep = t0, prev = t0 - ratio
        if counter != 1 {
            if ets.count > 3 { ets.removeFirst(ets.count - 3) }
            ets.append(modelOutput)
        } else {
            prev = timestep; timestep = timestep + ratio
        }
        var mo = modelOutput
        var sample = sample0
        let e = ets
        let n = mo.count
        if e.count == 1 && counter == 0 {
            curSample = sample
        } else if e.count == 1 && counter == 1 {
            let last = e[0]
            for j in 0..<n { mo[j] = (modelOutput[j] + last[j]) / 2 }
            sample = curSample!; curSample = nil
        } else if e.count == 2 {
            let a = e[1], b = e[0]
            for j in 0..<n { mo[j] = (3 * a[j] - b[j]) / 2 }
        } else if e.count == 3 {
            let a = e[2], b = e[1], c = e[0]
            for j in 0..<n { mo[j] = (23 * a[j] - 16 * b[j] + 5 * c[j]) / 12 }
        } else {
            let a = e[3], b = e[2], c = e[1], d = e[0]
            for j in 0..<n { mo[j] = (1 / Float(24)) * (55 * a[j] - 59 * b[j] + 37 * c[j] - 9 * d[j]) }
        }
        counter += 1
        // _get_prev_sample (formula (9) of the PNDM paper)
        let at = alpha(timestep), ap = alpha(prev)
        let bt = 1 - at, bp = 1 - ap
        if predictionType == "v_prediction" {
            let sa = at.squareRoot(), sb = bt.squareRoot()
            for j in 0..<n { mo[j] = sa * mo[j] + sb * sample[j] }
        }
        let sc = (ap / at).squareRoot()
        let den = at * bp.squareRoot() + (at * bt * ap).squareRoot()
        let diff = ap - at
        var out = [Float](repeating: 0, count: n)
        for j in 0..<n { out[j] = sc * sample[j] - diff * mo[j] / den }
        return out
    }

    func stepDDIM(_ mo: [Float], _ t: Int, _ sample: [Float]) -> [Float] {
        let prev = t - numTrainTimesteps / numInferenceSteps
        let at = alpha(t), ap = alpha(prev), bt = 1 - at
        let sat = at.squareRoot(), sbt = bt.squareRoot()
        let n = mo.count
        var x0 = [Float](repeating: 0, count: n), eps = mo
        if predictionType == "epsilon" {
            for j in 0..<n { x0[j] = (sample[j] - sbt * mo[j]) / sat }
        } else {
            for j in 0..<n { x0[j] = sat * sample[j] - sbt * mo[j]; eps[j] = sat * mo[j] + sbt * sample[j] }
        }
        if clipSample { for j in 0..<n { x0[j] = min(max(x0[j], -clipSampleRange), clipSampleRange) } }
        let dirc = (1 - ap).squareRoot(), sap = ap.squareRoot()
        var out = [Float](repeating: 0, count: n)
        for j in 0..<n { out[j] = sap * x0[j] + dirc * eps[j] }
        return out
    }

    func stepEuler(_ mo: [Float], _ i: Int, _ sample: [Float]) -> [Float] {
        let sigma = sigmas[i], dt = sigmas[i + 1] - sigma
        let n = mo.count
        var out = [Float](repeating: 0, count: n)
        if predictionType == "epsilon" {
            for j in 0..<n {
                let x0 = sample[j] - sigma * mo[j]
                let der = (sample[j] - x0) / sigma
                out[j] = sample[j] + der * dt
            }
        } else {
            let c1 = -sigma / (sigma * sigma + 1).squareRoot(), c2 = sigma * sigma + 1
            for j in 0..<n {
                let x0 = mo[j] * c1 + sample[j] / c2
                let der = (sample[j] - x0) / sigma
                out[j] = sample[j] + der * dt
            }
        }
        return out
    }
}
