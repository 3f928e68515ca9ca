// The SigLIP vision path against golden data from tools/golden_siglip.py (torch + transformers +
// Pillow 12, see Tests/Fixtures/siglip/versions.json): preprocessing, tower, token reduction,
// normalisation and projector.
import Foundation
import XCTest
import MetamorphCore
import MetamorphKernels
import MetamorphModels
import MetamorphRuntime

let fixtureRoot: String = {
    let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    return here.deletingLastPathComponent().appendingPathComponent("Fixtures/siglip").path
}()

/// A minimal .npy reader: little-endian float32 ('<f4') or uint8 ('|u1'), C order.
struct NPY {
    let shape: [Int]
    let floats: [Float]
    let bytes: [UInt8]

    init(_ path: String) throws {
        let d = try Data(contentsOf: URL(fileURLWithPath: path))
        let b = [UInt8](d)
        guard b.count > 10, b[0] == 0x93, String(bytes: b[1..<6], encoding: .ascii) == "NUMPY" else {
            throw MMError.format("\(path): not an npy file")
        }
        let major = b[6]
        let hlen: Int, start: Int
        if major == 1 { hlen = Int(b[8]) | Int(b[9]) << 8; start = 10 } else {
            hlen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        }
        let header = String(bytes: b[start..<(start + hlen)], encoding: .ascii)!
        guard !header.contains("'fortran_order': True") else { throw MMError.format("\(path): fortran order") }
        let sh = header.components(separatedBy: "'shape': (")[1].components(separatedBy: ")")[0]
        shape = sh.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let n = shape.reduce(1, *)
        let body = Array(b[(start + hlen)...])
        if header.contains("'<f4'") {
            var f = [Float](repeating: 0, count: n)
            f.withUnsafeMutableBytes { $0.copyBytes(from: body[0..<(4 * n)]) }
            floats = f; bytes = []
        } else if header.contains("'|u1'") {
            bytes = Array(body[0..<n]); floats = []
        } else {
            throw MMError.format("\(path): unsupported dtype in \(header)")
        }
    }
}

func loadStore(_ dir: String) throws -> TensorStore {
    try TensorStore.load(CheckpointFiles(directory: dir))
}

func readJSON(_ path: String) throws -> JSON {
    try JSON.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), what: path)
}

let imageNames = ["g37x23", "g300x200", "p1x1", "g5x400", "n23x37"]
let caseNames = ["c32_l-1_t4_norm_mlp2x", "c56_l-2_t16_lin_pad", "c56_l-1_t64_norm_erf_bf16", "c32_l0_t9_norm_lin"]

final class SiglipPreprocessTests: XCTestCase {
    /// Processor output vs SiglipImageProcessor(PIL). Compared in the 0..1 pixel scale (undoing
    /// (x - 0.5) / 0.5): tolerance 2/255 asked for, and in practice the 8-bit images are identical.
    func testPixelsMatchProcessor() throws {
        var worst: Float = 0
        for size in [32, 56] {
            for mode in ["square", "pad"] {
                let proc = ImageProcessor(config: .siglip(imageSize: size), aspectRatio: mode)
                for name in imageNames {
                    let img = try NPY("\(fixtureRoot)/images/\(name).npy")
                    let (h, w) = (img.shape[0], img.shape[1])
                    let got = try proc.preprocess(rgb: img.bytes, width: w, height: h)
                    let want = try NPY("\(fixtureRoot)/pixels/\(size)_\(mode)_\(name).npy")
                    XCTAssertEqual(want.shape, [3, size, size])
                    XCTAssertEqual(got.count, want.floats.count)
                    var d: Float = 0
                    for i in 0..<got.count { d = max(d, abs(got[i] - want.floats[i]) * 0.5) }
                    worst = max(worst, d)
                    XCTAssertLessThanOrEqual(d, 2 / 255, "\(size) \(mode) \(name)")
                }
            }
        }
        print("SiglipPreprocess: max |pixel diff| in 0..1 units = \(worst) (\(worst * 255) / 255)")
    }

    func testProcessorConfigParse() throws {
        // google/siglip-so400m-patch14-384 preprocessor_config.json
        let j = try JSON.parse(Array(#"{"do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}}"#.utf8), what: "preprocessor_config.json")
        let c = try ImageProcessorConfig.parse(j)
        XCTAssertEqual(c, ImageProcessorConfig.siglip(imageSize: 384))
        let bad = try JSON.parse(Array(#"{"resample": 0}"#.utf8), what: "t")
        XCTAssertThrowsError(try ImageProcessorConfig.parse(bad))
    }

    func testEdgeSizes() throws {
        let proc = ImageProcessor(config: .siglip(imageSize: 384), aspectRatio: "pad")
        // A very long thin image: the padded canvas is never materialised.
        let w = 8000, h = 1
        let rgb = [UInt8](repeating: 255, count: 3 * w * h)
        let px = try proc.preprocess(rgb: rgb, width: w, height: h)
        XCTAssertEqual(px.count, 3 * 384 * 384)
        XCTAssertEqual(px[0], Float(127.0 / 255.0 - 0.5) / 0.5, accuracy: 1e-6)  // background
        XCTAssertThrowsError(try proc.preprocess(rgb: [], width: 0, height: 3))
        XCTAssertThrowsError(try proc.preprocess(rgb: [1, 2, 3], width: 2, height: 2))
        let sq = ImageProcessor(config: .siglip(imageSize: 4), aspectRatio: "square")
        XCTAssertEqual(try sq.preprocess(rgb: [0, 128, 255], width: 1, height: 1).count, 48)
    }
}

final class SiglipModelTests: XCTestCase {
    func testConfigDefaults() throws {
        // google/siglip-so400m-patch14-384 config.json (no hidden_act, no layer_norm_eps)
        let j = try JSON.parse(Array(#"{"architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip", "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_text_model", "num_attention_heads": 16, "num_hidden_layers": 27}, "torch_dtype": "float32", "transformers_version": "4.37.0.dev0", "vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304, "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14}}"#.utf8), what: "config.json")
        let c = try SiglipVisionConfig.parse(j)
        XCTAssertEqual(c, SiglipVisionConfig.so400m384)
        XCTAssertEqual(c.numPatches, 729)
        XCTAssertEqual(c.layerNormEps, 1e-6)
        XCTAssertTrue(c.geluTanh)
        let d = try SiglipVisionConfig.parse(try JSON.parse(Array("{}".utf8), what: "t"))
        XCTAssertEqual([d.hiddenSize, d.intermediateSize, d.numHiddenLayers, d.numAttentionHeads, d.imageSize, d.patchSize],
                       [768, 3072, 12, 12, 224, 16])
        XCTAssertThrowsError(try SiglipVisionConfig.parse(try JSON.parse(Array(#"{"hidden_act": "relu"}"#.utf8), what: "t")))
    }

    func testMissingTower() throws {
        let store = TensorStore(label: "empty")
        XCTAssertThrowsError(try SiglipVisionTower.locate(checkpoint: store, separate: nil)) { e in
            XCTAssertTrue("\(e)".contains("no SigLIP weights"))
        }
    }

    /// Full path: golden pixels -> tower -> reduction -> normalisation -> projector, within 1e-4.
    func testProjectedFeatures() throws {
        var report: [String] = []
        for cs in caseNames {
            let dir = "\(fixtureRoot)/\(cs)"
            let mm = try readJSON("\(dir)/mm.json")
            let cfg = try SiglipVisionConfig.parse(try readJSON("\(dir)/config.json"))
            let store = try loadStore(dir)
            let (st, prefix) = try SiglipVisionTower.locate(checkpoint: store)
            XCTAssertEqual(prefix, mm["weights_prefix"]!.string!)
            let select = mm["mm_vision_select_layer"]!.int!
            let tower = try SiglipVisionTower(config: cfg, store: st, prefix: prefix)
            let proj = try MMProjector(store: store, type: mm["mm_projector_type"]!.string!,
                                       mmHidden: mm["mm_hidden_size"]!.int!, hidden: mm["hidden_size"]!.int!)
            let enc = try VisionEncoder(tower: tower, projector: proj, selectLayer: select,
                                        numImageTokens: mm["num_image_tokens"]!.int!, normalize: mm["normalize_vision"]!.bool!)
            let aspect = mm["image_aspect_ratio"]!.string!
            let pre = try ImageProcessorConfig.parse(try readJSON("\(dir)/preprocessor_config.json"))
            let proc = ImageProcessor(config: pre, aspectRatio: aspect)
            var worstTok: Float = 0, worstFeat: Float = 0
            var batchPixels: [Float] = []
            var batchWant: [Float] = []
            for name in imageNames {
                let px = try NPY("\(fixtureRoot)/pixels/\(cfg.imageSize)_\(aspect)_\(name).npy").floats
                // Our own preprocessing must give the same tokens too (checked on one image).
                if name == "g37x23" {
                    let img = try NPY("\(fixtureRoot)/images/\(name).npy")
                    let mine = try proc.preprocess(rgb: img.bytes, width: img.shape[1], height: img.shape[0])
                    XCTAssertEqual(mine.count, px.count)
                    for i in 0..<px.count { XCTAssertEqual(mine[i], px[i], accuracy: 4 / 255) }
                }
                for threads in [1, 2] {
                    let tok = try enc.visualTokens(pixels: px, threads: threads)
                    let want = try NPY("\(dir)/tokens_\(name).npy")
                    XCTAssertEqual(tok.count, want.floats.count, cs)
                    for i in 0..<min(tok.count, want.floats.count) { worstTok = max(worstTok, abs(tok[i] - want.floats[i])) }
                    let feat = proj(tok, threads: threads)
                    let wf = try NPY("\(dir)/features_\(name).npy")
                    XCTAssertEqual(wf.shape, [enc.tokensPerImage, proj.outFeatures])
                    XCTAssertEqual(feat.count, wf.floats.count, cs)
                    for i in 0..<min(feat.count, wf.floats.count) { worstFeat = max(worstFeat, abs(feat[i] - wf.floats[i])) }
                }
                batchPixels += px
                batchWant += try NPY("\(dir)/tokens_\(name).npy").floats
            }
            // Batched tower: all images in one call.
            let hs = try tower.encode(batch: batchPixels, count: imageNames.count, selectLayer: select, threads: 2)
            let per = cfg.numPatches * cfg.hiddenSize
            var worstBatch: Float = 0
            var off = 0
            for b in 0..<imageNames.count {
                let t = try VisionTokens.reduce(Array(hs[(b * per)..<((b + 1) * per)]), channels: cfg.hiddenSize,
                                                numImageTokens: enc.numImageTokens, normalize: enc.normalize)
                for i in 0..<t.count { worstBatch = max(worstBatch, abs(t[i] - batchWant[off + i])) }
                off += t.count
            }
            XCTAssertLessThanOrEqual(worstTok, 1e-4, cs)
            XCTAssertLessThanOrEqual(worstFeat, 1e-4, cs)
            XCTAssertLessThanOrEqual(worstBatch, 1e-4, cs)
            report.append("\(cs): tokens \(worstTok) features \(worstFeat) batch \(worstBatch)")
        }
        for r in report { print("SiglipFeatures max |diff| \(r)") }
    }

    func testSelectLayerRange() throws {
        let dir = "\(fixtureRoot)/c32_l-1_t4_norm_mlp2x"
        let cfg = try SiglipVisionConfig.parse(try readJSON("\(dir)/config.json"))
        let store = try loadStore(dir)
        let (st, prefix) = try SiglipVisionTower.locate(checkpoint: store)
        let tower = try SiglipVisionTower(config: cfg, store: st, prefix: prefix)
        XCTAssertEqual(try tower.layersNeeded(selectLayer: -1), cfg.numHiddenLayers)
        XCTAssertEqual(try tower.layersNeeded(selectLayer: -2), cfg.numHiddenLayers - 1)
        XCTAssertThrowsError(try tower.layersNeeded(selectLayer: cfg.numHiddenLayers + 1))
        XCTAssertThrowsError(try tower.layersNeeded(selectLayer: -cfg.numHiddenLayers - 2))
        XCTAssertThrowsError(try MMProjector(store: store, type: "mlp2x_relu", mmHidden: 32, hidden: 48))
        XCTAssertThrowsError(try VisionHead(store: store, type: "linear", hidden: 48, mmHidden: 32))
    }

    func testInterpolationMatchesKnownValues() {
        // 2x2 -> 1x1 with align_corners=False averages the four (src index 0.5 on both axes).
        let x: [Float] = [1, 2, 3, 4]
        let y = x.withUnsafeBufferPointer { VisionTokens.interpolate($0.baseAddress!, grid: 2, channels: 1, target: 1) }
        XCTAssertEqual(y, [2.5])
        // 2 -> 4 upsampling: src = (o + 0.5) / 2 - 0.5 -> [0 (clamped), 0.25, 0.75, 1.25 -> edge].
        let r = [Float]([0, 4, 0, 4]).withUnsafeBufferPointer {
            VisionTokens.interpolate($0.baseAddress!, grid: 2, channels: 1, target: 4)
        }
        XCTAssertEqual(Array(r[0..<4]), [0, 1, 3, 4])
    }

    /// Timing of a SigLIP-so400m-shaped tower; runs only with METAMORPH_BENCH_SIGLIP set
    /// (tools/bench_siglip.py writes the random checkpoint and sets it).
    func testBenchSo400m() throws {
        guard let dir = ProcessInfo.processInfo.environment["METAMORPH_BENCH_SIGLIP"] else {
            throw XCTSkip("set METAMORPH_BENCH_SIGLIP=<dir with config.json + model.safetensors>")
        }
        let cfg = try SiglipVisionConfig.parse(try readJSON("\(dir)/config.json"))
        let store = try loadStore(dir)
        let (st, prefix) = try SiglipVisionTower.locate(checkpoint: store)
        let tower = try SiglipVisionTower(config: cfg, store: st, prefix: prefix)
        let reps = Int(ProcessInfo.processInfo.environment["METAMORPH_BENCH_REPS"] ?? "2") ?? 2
        var px = [Float](repeating: 0, count: tower.pixelCount)
        for i in 0..<px.count { px[i] = Float((i * 7919) % 255) / 127.5 - 1 }
        for threads in [1, 2] {
            _ = try tower.encode(pixels: px, selectLayer: -1, threads: threads)  // warm-up (page-in)
            var best = Double.infinity
            for _ in 0..<reps {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try tower.encode(pixels: px, selectLayer: -1, threads: threads)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }
            print("BENCH_SIGLIP threads=\(threads) ms_per_image=\(String(format: "%.1f", best))")
        }
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        print("BENCH_SIGLIP peak_rss_mb=\(ru.ru_maxrss / 1024)")
    }
}
