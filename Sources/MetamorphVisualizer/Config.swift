// Configurations of the visualizer's parts, parsed from diffusers-format config.json files.
// Missing keys take diffusers' defaults; options the engine does not implement are refused
// with MMError.unsupported instead of being silently ignored.
import MetamorphCore

struct ConfigReader {
    let j: JSON
    let file: String
    init(_ j: JSON, file: String) throws {
        guard j.objectKeys != nil else { throw MMError.format("\(file): not a JSON object") }
        self.j = j; self.file = file
    }
    func fail(_ m: String) -> MMError { MMError.format("\(file): \(m)") }
    func has(_ k: String) -> Bool { if let v = j[k], !v.isNull { return true }; return false }
    func int(_ k: String, _ d: Int) throws -> Int {
        guard let v = j[k], !v.isNull else { return d }
        guard let i = v.int else { throw fail("\(k) must be an integer") }
        return i
    }
    func double(_ k: String, _ d: Double) throws -> Double {
        guard let v = j[k], !v.isNull else { return d }
        guard let x = v.double else { throw fail("\(k) must be a number") }
        return x
    }
    func bool(_ k: String, _ d: Bool) throws -> Bool {
        guard let v = j[k], !v.isNull else { return d }
        guard let b = v.bool else { throw fail("\(k) must be true or false") }
        return b
    }
    func string(_ k: String, _ d: String?) throws -> String? {
        guard let v = j[k], !v.isNull else { return d }
        guard let s = v.string else { throw fail("\(k) must be a string") }
        return s
    }
    func ints(_ k: String) throws -> [Int]? {
        guard let v = j[k], !v.isNull else { return nil }
        if let i = v.int { return [i] }
        guard let a = v.array else { throw fail("\(k) must be an integer or a list of integers") }
        return try a.map { guard let i = $0.int else { throw fail("\(k) must hold integers") }; return i }
    }
    func strings(_ k: String) throws -> [String]? {
        guard let v = j[k], !v.isNull else { return nil }
        guard let a = v.array else { throw fail("\(k) must be a list of strings") }
        return try a.map { guard let s = $0.string else { throw fail("\(k) must hold strings") }; return s }
    }
    /// Keys that must keep diffusers' default for the engine to be exact.
    func requireDefault(_ k: String, null: Bool = true, bool: Bool? = nil, string: String? = nil, number: Double? = nil) throws {
        guard let v = j[k], !v.isNull else { return }
        if let b = bool, v.bool == b { return }
        if let s = string, v.string == s { return }
        if let n = number, v.double == n { return }
        throw MMError.unsupported("\(file): \(k) = \(v.serialized) is not supported")
    }
}

/// UNet2DConditionModel's config (the SD1.5 subset: positional time embedding, cross-attention
/// blocks, no class / addition embeddings).
public struct UNetConfig: Sendable {
    public var inChannels = 4, outChannels = 4, sampleSize = 64
    public var blockOutChannels: [Int] = [320, 640, 1280, 1280]
    public var downBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    public var upBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    public var layersPerBlock = 2
    /// Heads per block (diffusers: num_attention_heads, or attention_head_dim when that is null, the
    /// historical SD1.5 naming: attention_head_dim 8 means 8 heads).
    public var numHeads: [Int] = [8, 8, 8, 8]
    public var transformerLayers: [Int] = [1, 1, 1, 1]
    public var crossAttentionDim = 768
    public var normNumGroups = 32
    public var normEps: Float = 1e-5
    public var flipSinToCos = true
    public var freqShift: Float = 0
    public var useLinearProjection = false
    public var midBlockScaleFactor: Float = 1
    public var downsamplePadding = 1
    public var centerInputSample = false
    public var midBlockType = "UNetMidBlock2DCrossAttn"

    public static func parse(_ j: JSON, file: String = "unet/config.json") throws -> UNetConfig {
        let r = try ConfigReader(j, file: file)
        var c = UNetConfig()
        c.inChannels = try r.int("in_channels", c.inChannels)
        c.outChannels = try r.int("out_channels", c.outChannels)
        c.sampleSize = try r.ints("sample_size")?.first ?? c.sampleSize
        c.blockOutChannels = try r.ints("block_out_channels") ?? c.blockOutChannels
        c.downBlockTypes = try r.strings("down_block_types") ?? c.downBlockTypes
        c.upBlockTypes = try r.strings("up_block_types") ?? c.upBlockTypes
        let n = c.blockOutChannels.count
        guard n > 0, c.downBlockTypes.count == n, c.upBlockTypes.count == n else {
            throw r.fail("block_out_channels, down_block_types and up_block_types must have the same length")
        }
        if let l = try r.ints("layers_per_block") {
            guard l.count == 1 || Set(l).count == 1 else { throw MMError.unsupported("\(file): per-block layers_per_block is not supported") }
            c.layersPerBlock = l[0]
        }
        let heads = try r.ints("num_attention_heads") ?? r.ints("attention_head_dim") ?? [8]
        c.numHeads = heads.count == 1 ? Array(repeating: heads[0], count: n) : heads
        guard c.numHeads.count == n else { throw r.fail("attention heads list must have one entry per block") }
        let tl = try r.ints("transformer_layers_per_block") ?? [1]
        c.transformerLayers = tl.count == 1 ? Array(repeating: tl[0], count: n) : tl
        guard c.transformerLayers.count == n else { throw r.fail("transformer_layers_per_block must have one entry per block") }
        c.crossAttentionDim = try r.ints("cross_attention_dim")?.first ?? c.crossAttentionDim
        c.normNumGroups = try r.int("norm_num_groups", c.normNumGroups)
        c.normEps = Float(try r.double("norm_eps", 1e-5))
        c.flipSinToCos = try r.bool("flip_sin_to_cos", true)
        c.freqShift = Float(try r.double("freq_shift", 0))
        c.useLinearProjection = try r.bool("use_linear_projection", false)
        c.midBlockScaleFactor = Float(try r.double("mid_block_scale_factor", 1))
        c.downsamplePadding = try r.int("downsample_padding", 1)
        c.centerInputSample = try r.bool("center_input_sample", false)
        c.midBlockType = try r.string("mid_block_type", c.midBlockType) ?? c.midBlockType
        try r.requireDefault("act_fn", string: "silu")
        for k in ["class_embed_type", "addition_embed_type", "encoder_hid_dim", "encoder_hid_dim_type",
                  "time_cond_proj_dim", "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act",
                  "projection_class_embeddings_input_dim", "num_class_embeds", "reverse_transformer_layers_per_block"] {
            try r.requireDefault(k)
        }
        try r.requireDefault("attention_type", string: "default")
        try r.requireDefault("only_cross_attention", bool: false)
        try r.requireDefault("dual_cross_attention", bool: false)
        try r.requireDefault("resnet_time_scale_shift", string: "default")
        try r.requireDefault("time_embedding_type", string: "positional")
        try r.requireDefault("conv_in_kernel", number: 3)
        try r.requireDefault("conv_out_kernel", number: 3)
        try r.requireDefault("resnet_skip_time_act", bool: false)
        try r.requireDefault("resnet_out_scale_factor", number: 1)
        try r.requireDefault("class_embeddings_concat", bool: false)
        try r.requireDefault("mid_block_only_cross_attention")
        try r.requireDefault("cross_attention_norm")
        // upcast_attention only changes float16 arithmetic: float32 here is unaffected.
        for t in c.downBlockTypes where !["CrossAttnDownBlock2D", "DownBlock2D"].contains(t) {
            throw MMError.unsupported("\(file): down block \(t) is not supported (CrossAttnDownBlock2D, DownBlock2D)")
        }
        for t in c.upBlockTypes where !["CrossAttnUpBlock2D", "UpBlock2D"].contains(t) {
            throw MMError.unsupported("\(file): up block \(t) is not supported (CrossAttnUpBlock2D, UpBlock2D)")
        }
        guard c.midBlockType == "UNetMidBlock2DCrossAttn" else {
            throw MMError.unsupported("\(file): mid_block_type \(c.midBlockType) is not supported (UNetMidBlock2DCrossAttn)")
        }
        guard c.downsamplePadding == 1 else { throw MMError.unsupported("\(file): downsample_padding \(c.downsamplePadding) is not supported (1)") }
        guard c.layersPerBlock > 0, c.normNumGroups > 0, c.inChannels > 0, c.outChannels > 0, c.crossAttentionDim > 0 else {
            throw r.fail("sizes must be positive")
        }
        for (i, ch) in c.blockOutChannels.enumerated() {
            guard ch > 0, ch % c.normNumGroups == 0 else { throw r.fail("block_out_channels[\(i)] = \(ch) is not a multiple of norm_num_groups") }
            guard c.numHeads[i] > 0, ch % c.numHeads[i] == 0 else { throw r.fail("block_out_channels[\(i)] = \(ch) is not a multiple of its head count") }
        }
        return c
    }
}

/// AutoencoderKL's config (decoder side).
public struct VAEConfig: Sendable {
    public var latentChannels = 4, outChannels = 3, layersPerBlock = 2, normNumGroups = 32
    public var blockOutChannels: [Int] = [128, 256, 512, 512]
    public var upBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    public var scalingFactor: Float = 0.18215
    public var shiftFactor: Float = 0
    public var usePostQuantConv = true
    public var midBlockAddAttention = true
    /// Pixels per latent cell: 2^(blocks - 1).
    public var scaleFactor: Int { 1 << (blockOutChannels.count - 1) }

    public static func parse(_ j: JSON, file: String = "vae/config.json") throws -> VAEConfig {
        let r = try ConfigReader(j, file: file)
        var c = VAEConfig()
        c.latentChannels = try r.int("latent_channels", c.latentChannels)
        c.outChannels = try r.int("out_channels", c.outChannels)
        c.layersPerBlock = try r.int("layers_per_block", c.layersPerBlock)
        c.normNumGroups = try r.int("norm_num_groups", c.normNumGroups)
        c.blockOutChannels = try r.ints("block_out_channels") ?? [64]
        c.upBlockTypes = try r.strings("up_block_types") ?? ["UpDecoderBlock2D"]
        c.scalingFactor = Float(try r.double("scaling_factor", 0.18215))
        c.shiftFactor = Float(try r.double("shift_factor", 0))
        c.usePostQuantConv = try r.bool("use_post_quant_conv", true)
        c.midBlockAddAttention = try r.bool("mid_block_add_attention", true)
        try r.requireDefault("act_fn", string: "silu")
        try r.requireDefault("norm_type", string: "group")
        try r.requireDefault("use_quant_conv", bool: true)
        guard c.upBlockTypes.count == c.blockOutChannels.count else { throw r.fail("up_block_types and block_out_channels differ in length") }
        for t in c.upBlockTypes where t != "UpDecoderBlock2D" {
            throw MMError.unsupported("\(file): up block \(t) is not supported (UpDecoderBlock2D)")
        }
        guard c.latentChannels > 0, c.outChannels > 0, c.layersPerBlock > 0, c.normNumGroups > 0 else { throw r.fail("sizes must be positive") }
        for ch in c.blockOutChannels where ch <= 0 || ch % c.normNumGroups != 0 {
            throw r.fail("block_out_channels entry \(ch) is not a positive multiple of norm_num_groups")
        }
        return c
    }
}

/// The adapter (MetaMorph's SimplifiedSigLIPProjector) config: model_config.json of the release.
public struct AdapterConfig: Sendable {
    public var mode = "mlp"
    public var inputDim = 1152, hiddenDim = 4096, outputDim = 768, numLayers = 6
    public var numTokens = 77, numHeads = 8

    public static func parse(_ j: JSON, file: String = "adapter/config.json") throws -> AdapterConfig {
        let r = try ConfigReader(j, file: file)
        var c = AdapterConfig()
        c.mode = try r.string("mode", c.mode) ?? c.mode
        c.inputDim = try r.int("input_dim", c.inputDim)
        c.hiddenDim = try r.int("hidden_dim", c.hiddenDim)
        c.outputDim = try r.int("output_dim", c.outputDim)
        c.numLayers = try r.int("num_layers", c.numLayers)
        c.numTokens = try r.int("num_tokens", c.numTokens)
        c.numHeads = try r.int("num_heads", c.numHeads)
        guard ["mlp", "xattn", "xattnffn"].contains(c.mode) else {
            throw MMError.unsupported("\(file): adapter mode \"\(c.mode)\" is not supported (mlp, xattn, xattnffn)")
        }
        guard c.inputDim > 0, c.hiddenDim > 0, c.outputDim > 0, c.numTokens > 0, c.numHeads > 0 else { throw r.fail("sizes must be positive") }
        if c.mode == "mlp" { guard c.numLayers >= 1 else { throw r.fail("mlp mode needs num_layers >= 1") } }
        else {
            guard c.numLayers >= 0 else { throw r.fail("num_layers must not be negative") }
            guard c.outputDim % c.numHeads == 0 else { throw r.fail("output_dim is not a multiple of num_heads") }
        }
        return c
    }
}
