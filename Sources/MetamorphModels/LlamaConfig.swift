// The configuration of a LLaMA decoder as transformers' LlamaConfig writes it in config.json,
// plus MetaMorph's multimodal fields (metamorph/model/language_model/metamorph_llama.py and
// ../shared/docs/METAMORPH.md section 2). Field names below are the JSON keys.
import MetamorphCore

public struct RopeScaling: Sendable {
    public var type: String             // "default", "linear", "llama3"
    public var factor: Double = 1
    public var lowFreqFactor: Double = 1
    public var highFreqFactor: Double = 4
    public var originalMaxPositionEmbeddings: Int = 8192
}

public struct MetaMorphConfig: Sendable {
    public var mmHiddenSize: Int            // mm_hidden_size: width of a visual token (SigLIP width)
    public var mmProjectorType: String      // mm_projector_type: "mlp2x_gelu" | "linear"
    public var mmVisionSelectLayer: Int     // mm_vision_select_layer
    public var mmVisionTower: String?       // mm_vision_tower
    public var visionHeadType: String?      // vision_head_type: "mlp" | "mlp2x_gelu" | "linear" | other
    public var imageTokenReduction: String  // image_token_reduction
    public var numImageTokens: Int          // num_image_tokens
    public var normalizeVision: Bool        // normalize_vision
    public var imageAspectRatio: String     // image_aspect_ratio: "square" | "pad"
    public var useImStartEnd: Bool          // mm_use_im_start_end
    public var visionConfig: JSON?          // vision_config (SigLIP vision tower), if the checkpoint embeds one
}

public struct LlamaConfig: Sendable {
    public var modelType: String              // model_type
    public var hiddenSize: Int                // hidden_size
    public var numHiddenLayers: Int           // num_hidden_layers
    public var numAttentionHeads: Int         // num_attention_heads
    public var numKeyValueHeads: Int          // num_key_value_heads (defaults to num_attention_heads)
    public var headDim: Int                   // head_dim (defaults to hidden_size / num_attention_heads)
    public var intermediateSize: Int          // intermediate_size
    public var vocabSize: Int                 // vocab_size
    public var rmsNormEps: Float              // rms_norm_eps
    public var ropeTheta: Double              // rope_theta
    public var ropeScaling: RopeScaling       // rope_scaling (null -> default)
    public var tieWordEmbeddings: Bool        // tie_word_embeddings
    public var maxPositionEmbeddings: Int     // max_position_embeddings
    public var attentionBias: Bool            // attention_bias
    public var mlpBias: Bool                  // mlp_bias
    public var bosTokenID: Int32?             // bos_token_id
    public var eosTokenIDs: [Int32]           // eos_token_id (int or list)
    public var mm: MetaMorphConfig?           // present for model_type "metamorph_llama"

    public static func parse(_ j: JSON, file: String = "config.json") throws -> LlamaConfig {
        func fail(_ m: String) -> MMError { MMError.format("\(file): \(m)") }
        func int(_ k: String, _ def: Int? = nil) throws -> Int {
            if let v = j[k], !v.isNull {
                guard let i = v.int else { throw fail("\(k) must be an integer") }
                return i
            }
            if let def { return def }
            throw fail("missing \(k)")
        }
        func dbl(_ k: String, _ def: Double) throws -> Double {
            if let v = j[k], !v.isNull {
                guard let d = v.double else { throw fail("\(k) must be a number") }
                return d
            }
            return def
        }
        func bool(_ k: String, _ def: Bool) throws -> Bool {
            if let v = j[k], !v.isNull {
                guard let b = v.bool else { throw fail("\(k) must be true or false") }
                return b
            }
            return def
        }
        guard j.objectKeys != nil else { throw fail("not a JSON object") }
        let modelType = j["model_type"]?.string ?? "llama"
        guard ["llama", "metamorph_llama", "metamorph"].contains(modelType) else {
            throw MMError.unsupported("\(file): model_type \"\(modelType)\" is not supported (llama, metamorph_llama)")
        }
        if let act = j["hidden_act"]?.string, act != "silu" {
            throw MMError.unsupported("\(file): hidden_act \"\(act)\" is not supported (silu)")
        }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        guard hidden > 0, heads > 0 else { throw fail("hidden_size and num_attention_heads must be positive") }
        let kvHeads = try int("num_key_value_heads", heads)
        let headDim = try int("head_dim", hidden / heads)
        let layers = try int("num_hidden_layers")
        let inter = try int("intermediate_size")
        let vocab = try int("vocab_size")
        guard kvHeads > 0, heads % kvHeads == 0 else { throw fail("num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)") }
        guard headDim > 0, headDim % 2 == 0 else { throw fail("head_dim \(headDim) must be positive and even") }
        guard layers >= 0, inter > 0, vocab > 0 else { throw fail("layer, intermediate and vocab sizes must be positive") }
        // Guard against absurd sizes that would overflow our index arithmetic.
        guard hidden < 1 << 20, inter < 1 << 22, vocab < 1 << 24, layers < 4096, heads * headDim < 1 << 20 else {
            throw fail("sizes out of the supported range")
        }

        var rs = RopeScaling(type: "default")
        if let r = j["rope_scaling"], !r.isNull {
            guard r.objectKeys != nil else { throw fail("rope_scaling must be an object or null") }
            let t = r["rope_type"]?.string ?? r["type"]?.string ?? "default"
            rs.type = t
            rs.factor = r["factor"]?.double ?? 1
            switch t {
            case "default": break
            case "linear": guard rs.factor > 0 else { throw fail("rope_scaling.factor must be positive") }
            case "llama3":
                rs.lowFreqFactor = r["low_freq_factor"]?.double ?? 1
                rs.highFreqFactor = r["high_freq_factor"]?.double ?? 4
                rs.originalMaxPositionEmbeddings = r["original_max_position_embeddings"]?.int ?? 8192
                guard rs.factor > 0, rs.highFreqFactor != rs.lowFreqFactor else { throw fail("bad llama3 rope_scaling values") }
            default:
                throw MMError.unsupported("\(file): rope_scaling type \"\(t)\" is not supported (default, linear, llama3)")
            }
        }

        var eos: [Int32] = []
        if let e = j["eos_token_id"] {
            if let i = e.int { eos = [Int32(truncatingIfNeeded: i)] } else if let a = e.array { eos = a.compactMap { $0.int.map { Int32(truncatingIfNeeded: $0) } } }
        }
        var mm: MetaMorphConfig? = nil
        if modelType != "llama" || j["mm_hidden_size"] != nil {
            mm = MetaMorphConfig(
                mmHiddenSize: try int("mm_hidden_size", 1152),
                mmProjectorType: j["mm_projector_type"]?.string ?? "linear",
                mmVisionSelectLayer: try int("mm_vision_select_layer", -1),
                mmVisionTower: j["mm_vision_tower"]?.string,
                visionHeadType: j["vision_head_type"]?.string,
                imageTokenReduction: j["image_token_reduction"]?.string ?? "interpolation",
                numImageTokens: try int("num_image_tokens", 64),
                normalizeVision: try bool("normalize_vision", false),
                imageAspectRatio: j["image_aspect_ratio"]?.string ?? "square",
                useImStartEnd: try bool("mm_use_im_start_end", true),
                visionConfig: j["vision_config"])
        }
        return LlamaConfig(
            modelType: modelType, hiddenSize: hidden, numHiddenLayers: layers, numAttentionHeads: heads,
            numKeyValueHeads: kvHeads, headDim: headDim, intermediateSize: inter, vocabSize: vocab,
            rmsNormEps: Float(try dbl("rms_norm_eps", 1e-6)), ropeTheta: try dbl("rope_theta", 10000),
            ropeScaling: rs, tieWordEmbeddings: try bool("tie_word_embeddings", false),
            maxPositionEmbeddings: try int("max_position_embeddings", 2048),
            attentionBias: try bool("attention_bias", false), mlpBias: try bool("mlp_bias", false),
            bosTokenID: j["bos_token_id"]?.int.map { Int32(truncatingIfNeeded: $0) }, eosTokenIDs: eos, mm: mm)
    }

    /// Inverse RoPE frequencies, computed in float32 as transformers does
    /// (modeling_rope_utils: _compute_default_rope_parameters / _compute_llama3_parameters).
    public func ropeInvFreq() -> [Float] {
        let half = headDim / 2
        var inv = [Float](repeating: 0, count: half)
        for i in 0..<half {
            let expo = Float(2 * i) / Float(headDim)
            inv[i] = 1.0 / Float(pow(Float(ropeTheta), expo))
        }
        switch ropeScaling.type {
        case "linear":
            for i in 0..<half { inv[i] /= Float(ropeScaling.factor) }
        case "llama3":
            let factor = Float(ropeScaling.factor)
            let low = Float(ropeScaling.lowFreqFactor), high = Float(ropeScaling.highFreqFactor)
            let oldCtx = Float(ropeScaling.originalMaxPositionEmbeddings)
            let lowWavelen = oldCtx / low
            let highWavelen = oldCtx / high
            for i in 0..<half {
                let wavelen = 2 * Float.pi / inv[i]
                // Long wavelengths are stretched by `factor`, short ones kept, the band between smoothed.
                var f = wavelen > lowWavelen ? inv[i] / factor : inv[i]
                let medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen)
                if medium {
                    let smooth = (oldCtx / wavelen - low) / (high - low)
                    f = (1 - smooth) * f / factor + smooth * f
                }
                inv[i] = f
            }
        default: break
        }
        return inv
    }
}

#if canImport(Glibc)
import Glibc
#endif
