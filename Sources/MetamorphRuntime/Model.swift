// A loaded checkpoint: configuration, tokenizer and decoder weights. Immutable after load and
// shared by every session (sessions hold all mutable state).
import MetamorphCore
import MetamorphModels
import MetamorphTokenizer
#if canImport(Glibc)
import Glibc
#endif

public struct LoadOptions: Sendable {
    public var useMmap = true
    public var requireTokenizer = false
    public var tokenizerPath: String? = nil
    public var visionTowerPath: String? = nil
    public init() {}
}

public final class Model: @unchecked Sendable {
    public let config: LlamaConfig
    public let llama: LlamaModel
    public let tokenizer: Tokenizer?
    public let store: TensorStore
    /// Ids that end a reply: generation_config.json's eos_token_id, else config.json's,
    /// plus <|eot_id|> / <|end_of_text|> when the tokenizer has them (the reference stops on both).
    public let eosIDs: Set<Int32>
    public let bosID: Int32?
    public let loadMilliseconds: Double
    public let label: String
    /// model.mm_projector: visual tokens -> input embeddings (MetaMorph checkpoints).
    public let projector: MMProjector?
    /// vision_head: hidden states -> visual tokens; present when the model can draw.
    public let visionHead: VisionHead?
    public let imageStartID: Int32?
    public let imageEndID: Int32?
    /// SigLIP tower + reduction + projector: images in. nil when the checkpoint has no tower
    /// (then `visionUnavailable` says why and what to pass).
    public let vision: VisionEncoder?
    public let imageProcessor: ImageProcessor?
    public let visionUnavailable: String
    /// The separate SigLIP directory's tensors: the tower's weights point into its mapping.
    let visionStore: TensorStore?

    /// Visual tokens can be generated: a vision head, a projector and <image_start> all exist.
    public var canGenerateImages: Bool { visionHead != nil && projector != nil && imageStartID != nil }

    public static func load(directory: String, options: LoadOptions = LoadOptions()) throws -> Model {
        var isDir = stat()
        guard stat(directory, &isDir) == 0 else { throw MMError.io("\(directory): no such checkpoint directory") }
        guard (isDir.st_mode & S_IFMT) == S_IFDIR else { throw MMError.io("\(directory) is not a directory") }
        return try load(files: CheckpointFiles(directory: directory, useMmap: options.useMmap), options: options)
    }

    public static func load(files: CheckpointFiles, options: LoadOptions = LoadOptions()) throws -> Model {
        let t0 = monotonicMilliseconds()
        let cfgBlob = try files.open("config.json")
        let config = try LlamaConfig.parse(cfgBlob.json(what: "config.json"))
        var eos = Set(config.eosTokenIDs)
        var bos = config.bosTokenID
        if files.exists("generation_config.json") {
            let g = try files.open("generation_config.json").json(what: "generation_config.json")
            if let e = g["eos_token_id"] {
                if let i = e.int { eos = [Int32(truncatingIfNeeded: i)] } else if let a = e.array { eos = Set(a.compactMap { $0.int.map { Int32(truncatingIfNeeded: $0) } }) }
            }
            if let b = g["bos_token_id"]?.int { bos = Int32(truncatingIfNeeded: b) }
        }
        var tokenizer: Tokenizer? = nil
        // MetaMorph's loader adds <image_start>/<image_end> to the LLaMA-3 vocabulary; a plain
        // LLaMA checkpoint has no rows for them, so it keeps the file's vocabulary as is.
        let tokOptions = TokenizerOptions(addMetaMorphImageTokens: config.mm != nil)
        if let p = options.tokenizerPath {
            tokenizer = try wrapTokenizer { try Tokenizer(path: p, options: tokOptions) }
        } else if files.exists("tokenizer.json") {
            if let p = files.path("tokenizer.json") {
                tokenizer = try wrapTokenizer { try Tokenizer(path: p, options: tokOptions) }
            } else {
                let bytes = try files.open("tokenizer.json").toArray()
                tokenizer = try wrapTokenizer { try Tokenizer(jsonData: bytes, options: tokOptions) }
            }
        } else if options.requireTokenizer {
            throw MMError.io("\(files.label): no tokenizer.json")
        }
        if let tok = tokenizer {
            for name in ["<|eot_id|>", "<|end_of_text|>"] { if let id = tok.tokenID(name) { eos.insert(id) } }
            if bos == nil { bos = tok.bosID }
            if tok.vocabSize > config.vocabSize {
                throw MMError.format("tokenizer.json has \(tok.vocabSize) tokens but the model's vocab_size is \(config.vocabSize)")
            }
        }
        let store = try TensorStore.load(files)
        let llama = try LlamaModel(config: config, store: store)
        var projector: MMProjector? = nil
        var head: VisionHead? = nil
        if let mm = config.mm {
            if store.hasAny(prefix: "model.mm_projector") {
                projector = try MMProjector(store: store, type: mm.mmProjectorType, mmHidden: mm.mmHiddenSize, hidden: config.hiddenSize)
            }
            if store.hasAny(prefix: "vision_head") {
                head = try VisionHead(store: store, type: mm.visionHeadType, hidden: config.hiddenSize, mmHidden: mm.mmHiddenSize)
            }
        }
        var vision: VisionEncoder? = nil
        var processor: ImageProcessor? = nil
        var visionStore: TensorStore? = nil
        var why = "\(files.label) is a text-only model (model_type \(config.modelType), no mm_projector)"
        if let mm = config.mm, let projector {
            (vision, processor, why, visionStore) = try loadVision(mm: mm, store: store, projector: projector, options: options)
        } else if options.visionTowerPath != nil {
            throw MMError.unsupported("a vision tower was given but \(files.label) has no mm_projector to use it")
        }
        return Model(config: config, llama: llama, tokenizer: tokenizer, store: store, eosIDs: eos, bosID: bos,
                     loadMilliseconds: monotonicMilliseconds() - t0, label: files.label, projector: projector, visionHead: head,
                     vision: vision, imageProcessor: processor, visionUnavailable: why, visionStore: visionStore)
    }

    /// The SigLIP tower from inside the checkpoint (model.vision_tower.vision_tower.*) or from a
    /// separate SigLIP directory (vision_model.*, as the official loader re-reads it from the hub).
    static func loadVision(mm: MetaMorphConfig, store: TensorStore, projector: MMProjector, options: LoadOptions)
        throws -> (VisionEncoder?, ImageProcessor?, String, TensorStore?) {
        var separate: TensorStore? = nil
        var separateConfig: JSON? = nil
        var preprocessor: ImageProcessorConfig? = nil
        if let dir = options.visionTowerPath {
            let vf = CheckpointFiles(directory: dir, useMmap: options.useMmap)
            separate = try TensorStore.load(vf)
            if vf.exists("config.json") { separateConfig = try vf.open("config.json").json(what: "\(dir)/config.json") }
            if vf.exists("preprocessor_config.json") {
                preprocessor = try ImageProcessorConfig.parse(try vf.open("preprocessor_config.json").json(what: "\(dir)/preprocessor_config.json"))
            }
        }
        guard let prefix = SiglipVisionTower.weightPrefix(in: store) ?? separate.flatMap({ SiglipVisionTower.weightPrefix(in: $0) }) else {
            if let dir = options.visionTowerPath {
                throw MMError.format("\(dir): no SigLIP weights (expected vision_model.* tensors)")
            }
            return (nil, nil, "no SigLIP weights: the checkpoint has no model.vision_tower.vision_tower.* tensors; pass the SigLIP directory (vision_model.*) as the vision tower path", nil)
        }
        let inCheckpoint = SiglipVisionTower.weightPrefix(in: store) != nil
        let towerStore = inCheckpoint ? store : separate!
        var vcfg: SiglipVisionConfig
        if inCheckpoint, let vc = mm.visionConfig, !vc.isNull {
            vcfg = try SiglipVisionConfig.parse(vc, file: "config.json vision_config")
        } else if let sc = separateConfig {
            vcfg = try SiglipVisionConfig.parse(sc, file: "\(options.visionTowerPath!)/config.json")
        } else if (mm.mmVisionTower ?? "").contains("so400m-patch14-384") {
            vcfg = .so400m384   // the tower MetaMorph names; its config is fixed and public
        } else {
            throw MMError.format("the checkpoint holds SigLIP weights but no vision_config, and mm_vision_tower \"\(mm.mmVisionTower ?? "")\" is not one whose configuration is known")
        }
        let n = vcfg.numHiddenLayers
        let sel = mm.mmVisionSelectLayer
        let needed = sel < 0 ? n + sel + 1 : sel
        guard needed >= 0, needed <= n else {
            throw MMError.format("mm_vision_select_layer \(sel) is outside the tower's \(n) layers")
        }
        let tower = try SiglipVisionTower(config: vcfg, store: towerStore, prefix: prefix, maxLayers: needed)
        let encoder = try VisionEncoder(tower: tower, projector: projector, selectLayer: sel, numImageTokens: mm.numImageTokens,
                                        normalize: mm.normalizeVision, reduction: mm.imageTokenReduction)
        let pc = preprocessor ?? ImageProcessorConfig.siglip(imageSize: vcfg.imageSize)
        return (encoder, ImageProcessor(config: pc, aspectRatio: mm.imageAspectRatio), "", inCheckpoint ? nil : separate)
    }

    init(config: LlamaConfig, llama: LlamaModel, tokenizer: Tokenizer?, store: TensorStore, eosIDs: Set<Int32>,
         bosID: Int32?, loadMilliseconds: Double, label: String, projector: MMProjector?, visionHead: VisionHead?,
         vision: VisionEncoder?, imageProcessor: ImageProcessor?, visionUnavailable: String, visionStore: TensorStore?) {
        self.config = config; self.llama = llama; self.tokenizer = tokenizer; self.store = store
        self.eosIDs = eosIDs; self.bosID = bosID; self.loadMilliseconds = loadMilliseconds; self.label = label
        self.projector = projector; self.visionHead = visionHead
        self.vision = vision; self.imageProcessor = imageProcessor; self.visionUnavailable = visionUnavailable
        self.visionStore = visionStore
        self.imageStartID = tokenizer?.tokenID("<image_start>")
        self.imageEndID = tokenizer?.tokenID("<image_end>")
    }

    public var modelType: String { config.modelType }
}

/// Tokenizer errors as engine errors, by kind (the C ABI status follows from the code).
public func wrapTokenizer<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as TokenizerError {
        let code: MMError.Code
        switch e {
        case .cannotRead: code = .io
        case .unknownType, .unsupported: code = .unsupported
        case .invalidUTF8: code = .invalidUTF8
        case .idOutOfRange: code = .outOfRange
        case .invalidJSON, .missingField, .wrongType, .mergeUnknownToken, .malformedMerge, .duplicateID, .invalidID:
            code = .format
        }
        throw MMError(code, "tokenizer: \(e)")
    }
}

public func monotonicMilliseconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1e6
}
