// safetensors: 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
// Tensors are views into the file's Blob: nothing is copied or converted at load time.
import MetamorphKernels

public enum DType: Int32, Sendable {
    case f32 = 0, f16 = 1, bf16 = 2   // same codes as MMK_F32 / MMK_F16 / MMK_BF16
    public var size: Int { self == .f32 ? 4 : 2 }
    public var name: String { ["F32", "F16", "BF16"][Int(rawValue)] }
    public var kernelCode: Int32 { rawValue }
}

public struct Tensor: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, dtype: DType, shape: [Int], data: UnsafeRawPointer) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.data = data
    }

    /// A float32 copy (small tensors: norms, biases, embeddings rows).
    public func toFloat() -> [Float] {
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { mmk_convert_to_f32(dtype.kernelCode, data, $0.baseAddress, Int64(count)) }
        return out
    }
}

/// All tensors of a checkpoint (one file or shards), by name.
public final class TensorStore: @unchecked Sendable {
    public private(set) var tensors: [String: Tensor] = [:]
    /// Tensors whose dtype this build cannot compute with (I8, F64...): an error only when used.
    private var unsupported: [String: String] = [:]
    private var blobs: [Blob] = []
    public let label: String

    public init(label: String) { self.label = label }

    public var mappedBytes: Int { blobs.reduce(0) { $0 + $1.count } }

    public func add(file blob: Blob, name fileName: String) throws {
        let n = blob.count
        guard n >= 8 else { throw MMError.format("\(fileName): truncated safetensors file (\(n) bytes, no header)") }
        var hlen: UInt64 = 0
        for k in 0..<8 { hlen |= UInt64(blob.bytes[k]) << (8 * UInt64(k)) }
        guard hlen <= UInt64(n - 8) else {
            throw MMError.format("\(fileName): safetensors header length \(hlen) runs past the end of the file (\(n) bytes)")
        }
        let header = UnsafeBufferPointer(rebasing: blob.bytes[8..<(8 + Int(hlen))])
        let json = try withExtendedLifetime(blob) { try JSON.parse(header, what: "\(fileName) header") }
        guard case .object(let entries, let keys) = json else { throw MMError.format("\(fileName): header is not a JSON object") }
        let dataStart = 8 + Int(hlen)
        let dataSize = n - dataStart
        var spans: [(Int, Int, String)] = []
        for name in keys where name != "__metadata__" {
            let e = entries[name]!
            guard let dt = e["dtype"]?.string, let shapeJ = e["shape"]?.array, let offs = e["data_offsets"]?.array,
                  offs.count == 2, let b0 = offs[0].int, let b1 = offs[1].int else {
                throw MMError.format("\(fileName): tensor \(name) has a malformed header entry")
            }
            var shape: [Int] = []
            for s in shapeJ {
                guard let v = s.int, v >= 0 else { throw MMError.format("\(fileName): tensor \(name) has a bad shape") }
                shape.append(v)
            }
            guard b0 >= 0, b1 >= b0, b1 <= dataSize else {
                throw MMError.format("\(fileName): tensor \(name) data_offsets [\(b0), \(b1)] lie outside the data (\(dataSize) bytes)")
            }
            let elSize: Int
            switch dt {
            case "F32": elSize = 4
            case "F16", "BF16": elSize = 2
            case "F64", "I64", "U64": elSize = 8
            case "I32", "U32": elSize = 4
            case "I16", "U16": elSize = 2
            case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": elSize = 1
            default: throw MMError.format("\(fileName): tensor \(name) has unknown dtype \(dt)")
            }
            var elems = 1
            for s in shape {
                let (m, o) = elems.multipliedReportingOverflow(by: s)
                guard !o else { throw MMError.format("\(fileName): tensor \(name) shape overflows") }
                elems = m
            }
            guard elems.multipliedReportingOverflow(by: elSize).partialValue == b1 - b0 else {
                throw MMError.format("\(fileName): tensor \(name) holds \(b1 - b0) bytes but \(dt) \(shape) needs \(elems * elSize)")
            }
            if tensors[name] != nil || unsupported[name] != nil {
                throw MMError.format("\(fileName): tensor \(name) appears twice in the checkpoint")
            }
            spans.append((b0, b1, name))
            let dtype: DType? = dt == "F32" ? .f32 : dt == "F16" ? .f16 : dt == "BF16" ? .bf16 : nil
            if let dtype {
                tensors[name] = Tensor(name: name, dtype: dtype, shape: shape, data: blob.base + dataStart + b0)
            } else {
                unsupported[name] = dt
            }
        }
        spans.sort { $0.0 < $1.0 }
        for k in 1..<max(spans.count, 1) where spans[k].0 < spans[k - 1].1 {
            throw MMError.format("\(fileName): tensors \(spans[k - 1].2) and \(spans[k].2) overlap in the data")
        }
        blobs.append(blob)
    }

    public func has(_ name: String) -> Bool { tensors[name] != nil || unsupported[name] != nil }
    /// Any tensor named `prefix` or `prefix.*`.
    public func hasAny(prefix: String) -> Bool {
        tensors.keys.contains { $0 == prefix + ".weight" || $0.hasPrefix(prefix + ".") }
    }

    /// The tensor `name`, checked against the shape the configuration implies.
    public func get(_ name: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[name] else {
            if let dt = unsupported[name] { throw MMError.unsupported("\(label): tensor \(name) has dtype \(dt); F32, F16 and BF16 are supported") }
            throw MMError.format("\(label): missing tensor \(name)")
        }
        guard t.shape == shape else {
            throw MMError.format("\(label): tensor \(name) has shape \(t.shape) but the config implies \(shape)")
        }
        return t
    }
    public func optional(_ name: String, shape: [Int]) throws -> Tensor? {
        has(name) ? try get(name, shape: shape) : nil
    }

    /// Load model.safetensors, or the shards listed in model.safetensors.index.json.
    public static func load(_ files: CheckpointFiles) throws -> TensorStore {
        let store = TensorStore(label: files.label)
        if files.exists("model.safetensors.index.json") {
            let idx = try files.open("model.safetensors.index.json")
            let j = try idx.json(what: "model.safetensors.index.json")
            guard case .object(let map, let keys)? = j["weight_map"] else {
                throw MMError.format("model.safetensors.index.json: no weight_map object")
            }
            var shardNames: [String] = []
            for k in keys {
                guard let f = map[k]!.string else { throw MMError.format("model.safetensors.index.json: entry \(k) is not a file name") }
                try CheckpointFiles.checkName(f)
                if !shardNames.contains(f) { shardNames.append(f) }
            }
            for f in shardNames { try store.add(file: try files.open(f), name: f) }
            for k in keys where !store.has(k) {
                throw MMError.format("model.safetensors.index.json lists \(k) in \(map[k]!.string!) but that shard does not hold it")
            }
        } else if files.exists("model.safetensors") {
            try store.add(file: try files.open("model.safetensors"), name: "model.safetensors")
        } else {
            throw MMError.io("\(files.label): no model.safetensors or model.safetensors.index.json")
        }
        return store
    }
}
