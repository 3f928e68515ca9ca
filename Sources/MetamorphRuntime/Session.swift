// A conversation on a shared model: the KV cache, what has been fed, and the generation loop
// (../shared/docs/METAMORPH.md section 4, text mode). One generation at a time per session;
// cancellation is latched so a cancel sent just before a generation starts is not lost.
import MetamorphCore
import MetamorphModels
import MetamorphKernels
import MetamorphTokenizer
import Synchronization

public enum PromptPart: Sendable {
    case text(String)
    case tokens([Int32])
    case image(ImageInput)
}

/// Pixels copied from the host (RGB8 rows, no padding).
public struct ImageInput: Sendable {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]
    public init(width: Int, height: Int, rgb: [UInt8]) { self.width = width; self.height = height; self.rgb = rgb }
}

public enum StopReason: Int32, Sendable {
    case none = 0, eos = 1, maxTokens = 2, stopString = 3, cancelled = 4, error = 5, contextFull = 6
    public var name: String {
        switch self {
        case .none: return "none"
        case .eos: return "eos"
        case .maxTokens: return "max_tokens"
        case .stopString: return "stop_string"
        case .cancelled: return "cancelled"
        case .error: return "error"
        case .contextFull: return "context_full"
        }
    }
}

public struct GenerationParams: Sendable {
    public var maxTokens = 256
    public var sampling = SamplingParams()
    public var seed: UInt64? = nil          // nil: a random seed, reported in the result
    public var raw = false
    public var assistantPrefix: String? = nil
    public var stopStrings: [String] = []
    public var keepLogits = false
    /// Keep this turn's projected image features (LLM input embeddings) in the result.
    public var keepImageFeatures = false
    /// Benchmarks: keep generating through end-of-sequence tokens.
    public var ignoreEOS = false
    public init() {}
}

public struct Timings: Sendable {
    public var promptTokens = 0
    public var generated = 0
    public var promptMilliseconds = 0.0
    public var generateMilliseconds = 0.0
}

public struct GenerationResult: Sendable {
    public var text = ""                    // the reply, special tokens removed
    public var tokens: [Int32] = []         // every generated id, the stop token included
    public var promptTokens: [Int32] = []   // as fed this turn; an image stands as -200
    public var stopReason: StopReason = .none
    public var seed: UInt64 = 0
    public var timings = Timings()
    public var firstLogits: [Float]? = nil
    public var images: [GeneratedImage] = []   // visual tokens generated in image mode, in order
    public var imageFeatures: [[Float]] = []   // with keepImageFeatures: [num_image_tokens * hidden] per input image
}

/// The reference's IMAGE_TOKEN_INDEX: how an image appears in printed prompt ids.
public let imageTokenIndex: Int32 = -200

public final class Session: @unchecked Sendable {
    public let model: Model
    public let contextLength: Int
    public var threads: Int
    let cache: KVCache
    let ws = LlamaWorkspace()
    /// Ids whose keys/values are in the cache, in order (-200 for image positions).
    public private(set) var history: [Int32] = []
    /// Ids generated last turn but not yet fed (the stop token), fed before the next turn.
    var unfed: [Int32] = []
    var replyClosed = true
    private let busy = Atomic<Bool>(false)
    private let cancelLatch = Atomic<Bool>(false)

    public var nPast: Int { history.count }

    public init(model: Model, contextLength: Int = 0, threads: Int = 1) throws {
        let maxPos = model.config.maxPositionEmbeddings
        let n = contextLength > 0 ? contextLength : min(maxPos, 4096)
        guard n >= 1 else { throw MMError.invalidArgument("context length must be positive") }
        self.model = model
        self.contextLength = n
        self.threads = max(1, threads)
        self.cache = model.llama.makeCache(limit: n)
    }

    public func cancel() { cancelLatch.store(true, ordering: .releasing) }

    /// Observe (and clear) a pending cancel: for work done on the session's behalf outside the
    /// generation loop (rendering a result's pictures).
    public func cancelRequested() -> Bool { takeCancel() }

    /// Observe (and clear) the cancel latch.
    func takeCancel() -> Bool { cancelLatch.exchange(false, ordering: .acquiringAndReleasing) }

    public func reset() throws {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw MMError(.busy, "the session is generating; cancel it first")
        }
        defer { busy.store(false, ordering: .releasing) }
        history.removeAll(); unfed.removeAll(); replyClosed = true
    }

    // MARK: prompt

    /// Token ids for this turn's input (images as -200), following the reference's
    /// tokenizer_image_token: the text is split at "<image>", every piece tokenised alone, one BOS
    /// at the very start. The llama3 template text itself begins with "<|begin_of_text|>", so a
    /// first chat turn starts with BOS twice, as the trained model expects.
    func buildPrompt(_ parts: [PromptPart], _ p: GenerationParams) throws -> [Int32] {
        let vocab = model.config.vocabSize
        var message = ""
        var images = 0
        var sawTokens = false
        for part in parts {
            switch part {
            case .text(let s): message += s
            case .image: images += 1
            case .tokens: sawTokens = true
            }
        }
        if sawTokens && !p.raw { throw MMError.invalidArgument("token parts are only accepted in raw mode") }
        if images > 0 && model.vision == nil {
            throw MMError.unsupported("\(model.label) cannot read images: \(model.visionUnavailable)")
        }
        let placeholders = countOccurrences(of: "<image>", in: message)
        if images > 0 && !p.raw && placeholders == 0 {
            // The reference demo: one image block per image (or video frame), then the question.
            message = String(repeating: "<image_start><image><image_end>", count: images) + "\n" + message
        } else if placeholders != images {
            throw MMError.invalidArgument("the prompt has \(placeholders) <image> placeholders but \(images) images were given")
        }
        let first = history.isEmpty
        var ids: [Int32] = []
        if !first {
            ids += unfed
            if !replyClosed, let eot = model.tokenizer?.tokenID("<|eot_id|>") { ids.append(eot) }
        }
        func encodeText(_ text: String, bos: Bool) throws {
            guard let tok = model.tokenizer else {
                throw MMError.unsupported("\(model.label) has no tokenizer.json: give the prompt as token ids")
            }
            if bos {
                guard let b = model.bosID ?? tok.bosID else { throw MMError.unsupported("the tokenizer has no BOS token") }
                ids.append(b)
            }
            let pieces = text.split(separator: "<image>", omittingEmptySubsequences: false).map(String.init)
            for (i, piece) in pieces.enumerated() {
                if i > 0 { ids.append(imageTokenIndex) }
                ids += tok.encode(piece, addSpecialTokens: false)
            }
        }
        if p.raw {
            var needBOS = first
            for part in parts {
                switch part {
                case .text(let s):
                    try encodeText(s, bos: needBOS); needBOS = false
                case .tokens(let t):
                    // Token parts are fed exactly as given (the caller decides about BOS).
                    needBOS = false
                    for id in t where id < 0 || Int(id) >= vocab {
                        throw MMError(.outOfRange, "token id \(id) is outside the vocabulary 0..<\(vocab)")
                    }
                    ids += t
                case .image: break
                }
            }
            if let prefix = p.assistantPrefix { try encodeText(prefix, bos: false) }
        } else {
            var text = first ? "<|begin_of_text|>" : ""
            text += "<|start_header_id|>user<|end_header_id|>\n" + message + "<|eot_id|>"
            text += "<|start_header_id|>assistant<|end_header_id|>\n" + (p.assistantPrefix ?? "")
            try encodeText(text, bos: first)
        }
        if ids.filter({ $0 == imageTokenIndex }).count != images {
            throw MMError.invalidArgument("<image> may not appear in the assistant prefix")
        }
        return ids
    }

    /// Encode this turn's images (once each) into LLM input embeddings [tokens][hidden].
    func encodeImages(_ parts: [PromptPart]) throws -> [[Float]] {
        var out: [[Float]] = []
        for part in parts {
            guard case .image(let img) = part else { continue }
            guard let vision = model.vision, let proc = model.imageProcessor else {
                throw MMError.unsupported("\(model.label) cannot read images: \(model.visionUnavailable)")
            }
            let pixels = try proc.preprocess(rgb: img.rgb, width: img.width, height: img.height)
            if takeCancel() { throw MMError(.cancelled, "generation cancelled while encoding images") }
            out.append(try vision.embeddings(pixels: pixels, threads: threads))
        }
        return out
    }

    // MARK: generation

    public func generate(_ parts: [PromptPart], params p: GenerationParams,
                         onText: ((String, Int32) -> Bool)? = nil) throws -> GenerationResult {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw MMError(.busy, "the session is already generating on another thread")
        }
        defer { busy.store(false, ordering: .releasing) }
        if takeCancel() { throw MMError(.cancelled, "generation cancelled before it started") }
        guard p.maxTokens > 0 else { throw MMError.invalidArgument("max_tokens must be at least 1 (got \(p.maxTokens))") }
        guard !parts.isEmpty else { throw MMError.invalidArgument("the prompt has no parts") }
        guard p.sampling.temperature >= 0, p.sampling.topP > 0, p.sampling.topP <= 1, p.sampling.minP >= 0, p.sampling.minP <= 1,
              p.sampling.topK >= 0, p.sampling.repeatPenalty > 0, !p.sampling.temperature.isNaN else {
            throw MMError.invalidArgument("sampling parameters out of range (temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, top_k >= 0, repeat_penalty > 0)")
        }
        let promptIDs = try buildPrompt(parts, p)
        guard !promptIDs.isEmpty else { throw MMError.invalidArgument("the prompt is empty") }
        // Every image stands for num_image_tokens positions of projected visual tokens.
        let nImages = promptIDs.filter { $0 == imageTokenIndex }.count
        let perImage = model.vision?.tokensPerImage ?? 0
        let positions = promptIDs.count - nImages + nImages * perImage
        if nImages > 0 && model.vision == nil {
            throw MMError.unsupported("\(model.label) cannot read images: \(model.visionUnavailable)")
        }
        guard history.count + positions + 1 <= contextLength else {
            throw MMError(.contextFull, "the prompt needs \(positions) positions but only \(contextLength - history.count - 1) of the context's \(contextLength) are free (one is kept for the reply)")
        }
        // A reply forced to begin inside an image needs a model that can draw.
        // (The reference only enters image mode on generated tokens; we also do when the caller
        // forces the reply to open with <image_start>, so a picture can be asked for outright.)
        let startsInImage = p.assistantPrefix?.hasSuffix("<image_start>") == true
        if startsInImage && (!model.canGenerateImages || promptIDs.last != model.imageStartID) {
            throw MMError.unsupported("\(model.label) cannot generate images (no vision head / projector): the reply cannot start with <image_start>")
        }

        var result = GenerationResult()
        result.promptTokens = promptIDs
        // Random seeds stay below 2^53 so every JSON reader prints them exactly.
        let seed = p.seed ?? UInt64.random(in: 0..<(1 << 53))
        result.seed = seed
        let llama = model.llama
        let h = llama.hiddenSize

        // Prefill in chunks: bounded activation memory, matrix-matrix work per chunk.
        let t0 = monotonicMilliseconds()
        let imageEmbeddings = try encodeImages(parts)
        if p.keepImageFeatures { result.imageFeatures = imageEmbeddings }
        // One row per position: a token id, or (image, row) of a projected visual token.
        var rows: [(Int32, Int, Int)] = []
        rows.reserveCapacity(positions)
        var imageIndex = 0
        for id in promptIDs {
            if id == imageTokenIndex {
                for r in 0..<perImage { rows.append((imageTokenIndex, imageIndex, r)) }
                imageIndex += 1
            } else {
                rows.append((id, -1, 0))
            }
        }
        let chunk = 512
        var xbuf = [Float](repeating: 0, count: min(chunk, rows.count) * h)
        var state = DecodeState(hidden: [Float](repeating: 0, count: h), logits: [Float](repeating: 0, count: llama.vocabSize))
        var start = 0
        while start < rows.count {
            let n = min(chunk, rows.count - start)
            xbuf.withUnsafeMutableBufferPointer { xb in
                for i in 0..<n {
                    let (id, img, r) = rows[start + i]
                    let dst = xb.baseAddress! + i * h
                    if img < 0 {
                        llama.embed([id], into: dst)
                    } else {
                        imageEmbeddings[img].withUnsafeBufferPointer { dst.update(from: $0.baseAddress! + r * h, count: h) }
                    }
                }
                llama.forward(xb.baseAddress!, count: n, pos0: history.count, cache: cache, threads: threads, ws: ws)
                if start + n == rows.count {
                    state.hidden.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: xb.baseAddress! + (n - 1) * h, count: h) }
                }
            }
            history += rows[start..<start + n].map { $0.0 }
            start += n
            if takeCancel() {
                // The fed part of the prompt stays in the cache; the turn ends here.
                unfed = []; replyClosed = false
                result.stopReason = .cancelled
                result.timings.promptTokens = start
                result.timings.promptMilliseconds = monotonicMilliseconds() - t0
                return result
            }
        }
        unfed = []
        replyClosed = false
        let t1 = monotonicMilliseconds()
        result.timings.promptTokens = rows.count
        result.timings.promptMilliseconds = t1 - t0
        state.imageMode = startsInImage
        if !startsInImage {
            state.computeLogits(llama, threads: threads)
            if p.keepLogits { result.firstLogits = state.logits }
        }
        let decoder = model.tokenizer?.makeStreamingDecoder(skipSpecialTokens: true)
        var sampler = Sampler(params: p.sampling, seed: seed)
        try decodeLoop(&result, &sampler, &state, p, decoder: decoder, onText: onText)
        result.timings.generateMilliseconds = monotonicMilliseconds() - t1
        return result
    }

    /// What the loop carries from one position to the next.
    struct DecodeState {
        var hidden: [Float]          // final-normed hidden state of the last fed position
        var logits: [Float]
        var imageMode = false
        mutating func computeLogits(_ llama: LlamaModel, threads: Int) {
            hidden.withUnsafeBufferPointer { hb in
                logits.withUnsafeMutableBufferPointer { lb in llama.logits(hb.baseAddress!, into: lb.baseAddress!, threads: threads) }
            }
        }
    }

    /// Feed one input embedding (a token's or a projected visual token) at the next position.
    private func feed(embedding: UnsafeMutablePointer<Float>, id: Int32, state: inout DecodeState) {
        model.llama.forward(embedding, count: 1, pos0: history.count, cache: cache, threads: threads, ws: ws)
        let h = state.hidden.count
        state.hidden.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: embedding, count: h) }
        history.append(id)
    }

    private func decodeLoop(_ result: inout GenerationResult, _ sampler: inout Sampler, _ state: inout DecodeState,
                            _ p: GenerationParams, decoder: StreamingDecoder?, onText: ((String, Int32) -> Bool)?) throws {
        let llama = model.llama
        let h = llama.hiddenSize
        var x = [Float](repeating: 0, count: h)
        var stops = StopMatcher(p.stopStrings)
        var text = ""
        var positions = 0   // every generated position, text and visual, counts against max_tokens
        func emit(_ s: String, _ token: Int32) -> Bool {
            if s.isEmpty && token < 0 { return true }
            text += s
            return onText?(s, token) ?? true
        }
        outer: while true {
            if state.imageMode {
                // Image mode (METAMORPH.md section 4): each step's hidden state goes through the
                // vision head (L2-normalised when normalize_vision) and is kept as a visual token;
                // its projection is the next input. After num_image_tokens steps, text again.
                let head = model.visionHead!, proj = model.projector!
                let mm = model.config.mm!
                var image = GeneratedImage(dim: head.outFeatures)
                result.images.append(image)
                let idx = result.images.count - 1
                for _ in 0..<mm.numImageTokens {
                    if takeCancel() { result.stopReason = .cancelled; break outer }
                    if positions >= p.maxTokens { result.stopReason = .maxTokens; break outer }
                    if history.count + 1 >= contextLength { result.stopReason = .contextFull; break outer }
                    var z = state.hidden.withUnsafeBufferPointer { head(hidden: $0.baseAddress!, rows: 1, threads: threads) }
                    let zDim = z.count
                    if mm.normalizeVision { z.withUnsafeMutableBufferPointer { VisionTokens.l2Normalize($0.baseAddress!, rows: 1, dim: zDim) } }
                    image.tokens += z
                    image.count += 1
                    result.images[idx] = image
                    positions += 1
                    var e = z.withUnsafeBufferPointer { proj($0.baseAddress!, rows: 1, threads: threads) }
                    e.withUnsafeMutableBufferPointer { feed(embedding: $0.baseAddress!, id: imageTokenIndex, state: &state) }
                }
                image.complete = true
                result.images[idx] = image
                state.imageMode = false
                // max_tokens counts visual positions: an image that ends exactly at the limit ends the reply.
                if positions >= p.maxTokens { result.stopReason = .maxTokens; break outer }
                state.computeLogits(llama, threads: threads)
                if p.keepLogits && result.firstLogits == nil { result.firstLogits = state.logits }
                continue
            }
            if takeCancel() { result.stopReason = .cancelled; break }
            let recentStart = p.sampling.repeatLastN < 0 ? 0 : max(0, history.count - p.sampling.repeatLastN)
            let recent = history[recentStart...].filter { $0 >= 0 } + result.tokens
            let next = state.logits.withUnsafeMutableBufferPointer { sampler.sample($0, recent: recent[...]) }
            result.tokens.append(next)
            positions += 1
            if !p.ignoreEOS && model.eosIDs.contains(next) {
                unfed = [next]; replyClosed = true
                result.stopReason = .eos
                break
            }
            if let decoder {
                let piece = (try? decoder.push(next)) ?? ""
                let (out, hit) = stops.feed(piece)
                if !emit(out, next) { unfed = [next]; result.stopReason = .cancelled; break }
                if hit { unfed = [next]; result.stopReason = .stopString; break }
            } else if !emit("", next) { unfed = [next]; result.stopReason = .cancelled; break }
            if positions >= p.maxTokens { unfed = [next]; result.stopReason = .maxTokens; break }
            if history.count + 1 >= contextLength { unfed = [next]; result.stopReason = .contextFull; break }
            x.withUnsafeMutableBufferPointer { xb in
                llama.embed([next], into: xb.baseAddress!)
                feed(embedding: xb.baseAddress!, id: next, state: &state)
            }
            if next == model.imageStartID && model.canGenerateImages {
                state.imageMode = true
            } else {
                state.computeLogits(llama, threads: threads)
            }
        }
        if let decoder, result.stopReason != .stopString {
            let (out, _) = stops.feed(decoder.finish(), final: true)
            _ = emit(out, -1)
        }
        result.timings.generated = positions
        result.text = text
    }
}

/// Visual tokens of one image generated in image mode: count x dim floats, SigLIP space.
public struct GeneratedImage: Sendable {
    public var dim: Int
    public var tokens: [Float] = []
    public var count = 0
    /// All num_image_tokens were produced (false when max tokens, the context or a cancel cut it).
    public var complete = false
    public init(dim: Int) { self.dim = dim }
}

func countOccurrences(of needle: String, in hay: String) -> Int {
    hay.split(separator: needle, omittingEmptySubsequences: false).count - 1
}

/// Finds stop strings in streamed text, holding back any tail that could still become one.
struct StopMatcher {
    let stops: [String]
    var held = ""
    init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Returns the text safe to emit and whether a stop string was hit (text before it is emitted).
    mutating func feed(_ s: String, final: Bool = false) -> (String, Bool) {
        guard !stops.isEmpty else { return (s, false) }
        held += s
        var best: Range<String.Index>? = nil
        for stop in stops {
            if let r = held.firstRange(of: stop), best == nil || r.lowerBound < best!.lowerBound { best = r }
        }
        if let r = best {
            let out = String(held[..<r.lowerBound])
            held = ""
            return (out, true)
        }
        if final { let out = held; held = ""; return (out, false) }
        // Keep the longest suffix of `held` that is a prefix of some stop string.
        var keep = 0
        for stop in stops {
            let maxK = min(stop.count - 1, held.count)
            if maxK <= keep { continue }
            for k in stride(from: maxK, to: keep, by: -1) where held.hasSuffix(String(stop.prefix(k))) {
                keep = k; break
            }
        }
        let cut = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<cut])
        held = String(held[cut...])
        return (out, false)
    }
}
