// Token choice from logits, in transformers' order of logits processors: repetition penalty,
// temperature, top-k, top-p, min-p, then a draw from the softmax. Temperature 0 is greedy.
import MetamorphCore
import MetamorphKernels

public struct SamplingParams: Sendable {
    public var temperature: Float = 0
    public var topK: Int = 0
    public var topP: Float = 1
    public var minP: Float = 0
    public var repeatPenalty: Float = 1
    public var repeatLastN: Int = 64
    public init() {}
}

public struct Sampler {
    public var params: SamplingParams
    public var rng: Rng
    var candidates: [(Int32, Float)] = []

    public init(params: SamplingParams, seed: UInt64) {
        self.params = params
        self.rng = Rng(seed: seed)
    }

    /// Choose the next token. `recent` are the ids the repetition penalty looks at.
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>, recent: ArraySlice<Int32>) -> Int32 {
        let n = logits.count
        if params.repeatPenalty != 1 {
            // transformers' RepetitionPenaltyLogitsProcessor: each distinct id once; positive
            // logits are divided, negative ones multiplied.
            var seen = Set<Int32>()
            for id in recent where id >= 0 && Int(id) < n && seen.insert(id).inserted {
                let v = logits[Int(id)]
                logits[Int(id)] = v > 0 ? v / params.repeatPenalty : v * params.repeatPenalty
            }
        }
        if params.temperature <= 0 {
            return Int32(mmk_argmax(logits.baseAddress, Int64(n)))
        }
        let t = params.temperature
        // Candidates sorted by logit, descending; top-k first bounds the sort.
        candidates.removeAll(keepingCapacity: true)
        // Tokens more than 40 nats below the best have probability < 4e-18 relative to it: they
        // cannot change a draw, and dropping them keeps the sort small.
        var best = -Float.infinity
        for i in 0..<n where logits[i] > best { best = logits[i] }
        let floorLogit = best - 40 * t
        for i in 0..<n where logits[i] >= floorLogit { candidates.append((Int32(i), logits[i] / t)) }
        if candidates.isEmpty { return 0 }
        if params.topK > 0 && params.topK < candidates.count {
            candidates = partialTop(candidates, params.topK)
        } else {
            candidates.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        }
        // Softmax over the survivors.
        let mx = candidates[0].1
        var probs = candidates.map { Double(expf($0.1 - mx)) }
        var sum = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= sum }
        var keep = probs.count
        if params.topP < 1 {
            // Smallest prefix whose mass reaches top_p (at least one token).
            var acc = 0.0
            for i in 0..<probs.count {
                acc += probs[i]
                if acc >= Double(params.topP) { keep = i + 1; break }
            }
        }
        if params.minP > 0 {
            let floorP = probs[0] * Double(params.minP)
            var k = 1
            while k < keep && probs[k] >= floorP { k += 1 }
            keep = k
        }
        sum = 0
        for i in 0..<keep { sum += probs[i] }
        var r = rng.uniform() * sum
        for i in 0..<keep {
            r -= probs[i]
            if r < 0 { return candidates[i].0 }
        }
        return candidates[keep - 1].0
    }

    private func partialTop(_ c: [(Int32, Float)], _ k: Int) -> [(Int32, Float)] {
        // A min-heap would do; k is small in practice, so a threshold pass + sort is enough.
        var sorted = c
        sorted.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        return Array(sorted.prefix(k))
    }
}

#if canImport(Glibc)
import Glibc
#endif
