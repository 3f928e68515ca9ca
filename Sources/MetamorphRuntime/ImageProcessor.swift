// SigLIP image preprocessing with the semantics of transformers' SiglipImageProcessor (the PIL
// backend, which is what MetaMorph was trained with) plus MetaMorph's optional pad-to-square:
//   [pad: paste the image centred on a square canvas of colour int(mean * 255), ((w-h)//2 offset)]
//   -> resize to size.width x size.height with Pillow's resampling (8-bit, horizontal then vertical)
//   -> x * rescale_factor (in double, stored as float32) -> (x - mean) / std in float32 -> CHW.
// Input is packed RGB8 rows. The resampling loops are mmk_resize_u8 (MetamorphKernels/resize.c).
import MetamorphCore
import MetamorphKernels

/// The fields of a preprocessor_config.json that SiglipImageProcessor uses.
public struct ImageProcessorConfig: Sendable, Equatable {
    public var doResize: Bool = true
    public var height: Int = 384          // size.height
    public var width: Int = 384           // size.width
    public var resample: Int = 3          // Pillow code: 3 BICUBIC (2 BILINEAR, 1 LANCZOS, 4 BOX, 5 HAMMING)
    public var doRescale: Bool = true
    public var rescaleFactor: Double = 1.0 / 255.0
    public var doNormalize: Bool = true
    public var imageMean: [Float] = [0.5, 0.5, 0.5]
    public var imageStd: [Float] = [0.5, 0.5, 0.5]

    public init() {}

    /// SigLIP defaults for a given square image size (what google/siglip-* ship).
    public static func siglip(imageSize: Int) -> ImageProcessorConfig {
        var c = ImageProcessorConfig()
        c.height = imageSize; c.width = imageSize
        return c
    }

    /// Parse a preprocessor_config.json object. Missing keys keep the SigLIP defaults.
    public static func parse(_ j: JSON, file: String = "preprocessor_config.json") throws -> ImageProcessorConfig {
        func fail(_ m: String) -> MMError { MMError.format("\(file): \(m)") }
        guard j.objectKeys != nil else { throw fail("not a JSON object") }
        var c = ImageProcessorConfig()
        func bool(_ k: String, _ d: Bool) throws -> Bool {
            guard let v = j[k], !v.isNull else { return d }
            guard let b = v.bool else { throw fail("\(k) must be true or false") }
            return b
        }
        func triple(_ k: String, _ d: [Float]) throws -> [Float] {
            guard let v = j[k], !v.isNull else { return d }
            if let x = v.double { return [Float(x), Float(x), Float(x)] }
            guard let a = v.array, a.count == 3 else { throw fail("\(k) must be a number or a list of 3 numbers") }
            return try a.map { e in
                guard let x = e.double else { throw fail("\(k) must hold numbers") }
                return Float(x)
            }
        }
        c.doResize = try bool("do_resize", true)
        c.doRescale = try bool("do_rescale", true)
        c.doNormalize = try bool("do_normalize", true)
        if let s = j["size"], !s.isNull {
            if let h = s["height"]?.int, let w = s["width"]?.int {
                c.height = h; c.width = w
            } else if let e = s["shortest_edge"]?.int {
                // SiglipImageProcessor resizes to a fixed size; a square of the edge is the only
                // reading of shortest_edge that keeps the patch grid square.
                c.height = e; c.width = e
            } else if let n = s.int {
                c.height = n; c.width = n
            } else {
                throw fail("size must be {\"height\", \"width\"}")
            }
        }
        guard c.height > 0, c.width > 0, c.height <= 16384, c.width <= 16384 else { throw fail("size out of range") }
        if let r = j["resample"], !r.isNull {
            guard let v = r.int else { throw fail("resample must be an integer") }
            guard (1...5).contains(v) else {
                throw MMError.unsupported("\(file): resample \(v) is not supported (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)")
            }
            c.resample = v
        }
        if let r = j["rescale_factor"], !r.isNull {
            guard let v = r.double else { throw fail("rescale_factor must be a number") }
            c.rescaleFactor = v
        }
        c.imageMean = try triple("image_mean", c.imageMean)
        c.imageStd = try triple("image_std", c.imageStd)
        guard c.imageStd.allSatisfy({ $0 != 0 }) else { throw fail("image_std must not be zero") }
        return c
    }
}

/// Turns RGB8 images into the float32 CHW tensors the SigLIP tower reads.
public struct ImageProcessor: Sendable {
    public let config: ImageProcessorConfig
    /// MetaMorph's image_aspect_ratio: "pad" pads to a square first; anything else ("square") does not.
    public let aspectRatio: String

    public init(config: ImageProcessorConfig, aspectRatio: String = "square") {
        self.config = config
        self.aspectRatio = aspectRatio
    }

    /// Output floats per image: 3 * height * width.
    public var outputCount: Int { 3 * config.height * config.width }

    /// The padding colour of expand2square: tuple(int(x * 255) for x in image_mean).
    public var padColor: [UInt8] {
        config.imageMean.map { m in
            let v = (Double(m) * 255).rounded(.towardZero)
            return UInt8(max(0, min(255, v)))
        }
    }

    /// MetaMorph's expand2square: the image centred on a max(w,h) square canvas of `color`
    /// (offset (w-h)//2 on the short axis). A square image is returned unchanged.
    public static func expandToSquare(_ rgb: UnsafeBufferPointer<UInt8>, width w: Int, height h: Int,
                                      color: [UInt8]) -> (pixels: [UInt8], side: Int) {
        if w == h { return (Array(rgb[0..<(3 * w * h)]), w) }
        let side = max(w, h)
        var out = [UInt8](repeating: 0, count: 3 * side * side)
        for i in 0..<(side * side) { out[3 * i] = color[0]; out[3 * i + 1] = color[1]; out[3 * i + 2] = color[2] }
        let x0 = w > h ? 0 : (h - w) / 2
        let y0 = w > h ? (w - h) / 2 : 0
        out.withUnsafeMutableBufferPointer { o in
            for y in 0..<h {
                let src = rgb.baseAddress! + 3 * w * y
                let dst = o.baseAddress! + 3 * (side * (y + y0) + x0)
                dst.update(from: src, count: 3 * w)
            }
        }
        return (out, side)
    }

    /// The 8-bit image after padding and resizing (what PIL hands to numpy), HWC RGB.
    public func resized(rgb: UnsafeBufferPointer<UInt8>, width: Int, height: Int) throws -> (pixels: [UInt8], width: Int, height: Int) {
        guard width > 0, height > 0 else { throw MMError.invalidArgument("image size \(width)x\(height): both sides must be positive") }
        guard width <= 65535, height <= 65535 else { throw MMError.invalidArgument("image size \(width)x\(height) is too large (at most 65535 per side)") }
        let (n, o) = (3 * width).multipliedReportingOverflow(by: height)
        guard !o, rgb.count >= n else {
            throw MMError.invalidArgument("image buffer holds \(rgb.count) bytes but \(width)x\(height) RGB needs \(3 * width * height)")
        }
        // Padding is applied row by row inside the kernel, never materialised.
        var side = (width, height), x0 = 0, y0 = 0
        if aspectRatio == "pad" && width != height {
            let m = max(width, height)
            side = (m, m)
            if width > height { y0 = (width - height) / 2 } else { x0 = (height - width) / 2 }
        }
        let (dw, dh) = config.doResize ? (config.width, config.height) : side
        let (outN, o2) = (3 * dw).multipliedReportingOverflow(by: dh)
        guard !o2, outN < 1 << 31 else { throw MMError.invalidArgument("output size \(dw)x\(dh) is too large") }
        var dst = [UInt8](repeating: 0, count: outN)
        let color = padColor
        let rc = color.withUnsafeBufferPointer { col in
            dst.withUnsafeMutableBufferPointer { d in
                mmk_resize_u8_padded(rgb.baseAddress, Int32(width), Int32(height), 3, Int32(side.0), Int32(side.1),
                                     Int32(x0), Int32(y0), col.baseAddress, d.baseAddress, Int32(dw), Int32(dh),
                                     Int32(config.resample))
            }
        }
        switch rc {
        case 0: return (dst, dw, dh)
        case -2: throw MMError.unsupported("resample \(config.resample) is not supported")
        case -3: throw MMError.io("out of memory resizing a \(side.0)x\(side.1) image")
        default: throw MMError.invalidArgument("cannot resize a \(side.0)x\(side.1) image to \(dw)x\(dh)")
        }
    }

    /// Preprocess one packed RGB8 image (rows of 3*width bytes) into float32 CHW
    /// [3][height][width] of the configured size (or the padded input size when do_resize is off).
    public func preprocess(rgb: UnsafeBufferPointer<UInt8>, width: Int, height: Int) throws -> [Float] {
        let r = try resized(rgb: rgb, width: width, height: height)
        let plane = r.width * r.height
        var out = [Float](repeating: 0, count: 3 * plane)
        let c = config
        r.pixels.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                for ch in 0..<3 {
                    // numpy: image.astype(float64) * scale -> float32, then (x - mean) / std in float32.
                    var lut = [Float](repeating: 0, count: 256)
                    for v in 0..<256 {
                        var x = c.doRescale ? Float(Double(v) * c.rescaleFactor) : Float(v)
                        if c.doNormalize { x = (x - c.imageMean[ch]) / c.imageStd[ch] }
                        lut[v] = x
                    }
                    let dst = o.baseAddress! + ch * plane
                    for i in 0..<plane { dst[i] = lut[Int(p[3 * i + ch])] }
                }
            }
        }
        return out
    }

    public func preprocess(rgb: [UInt8], width: Int, height: Int) throws -> [Float] {
        try rgb.withUnsafeBufferPointer { try preprocess(rgb: $0, width: width, height: height) }
    }
}
