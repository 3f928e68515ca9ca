// Shared helpers for engine tests: where the tiny checkpoints and golden data are.
import Foundation
import MetamorphCore
import XCTest

enum Paths {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static var golden: String { repo + "/Tests/Fixtures/golden" }
    static var shared: String { repo + "/../shared" }

    /// The tiny random checkpoints of tools/make_checkpoints.py (numpy only), made once per
    /// checkout under .build/test-checkpoints, or taken from METAMORPH_TEST_CKPT_DIR.
    static let checkpoints: String = {
        if let d = ProcessInfo.processInfo.environment["METAMORPH_TEST_CKPT_DIR"], !d.isEmpty { return d }
        let dir = repo + "/.build/test-checkpoints"
        let stamp = dir + "/.complete"
        let script = repo + "/tools/make_checkpoints.py"
        let stampOK = FileManager.default.fileExists(atPath: stamp)
        let scriptDate = (try? FileManager.default.attributesOfItem(atPath: script)[.modificationDate] as? Date) ?? Date()
        let stampDate = (try? FileManager.default.attributesOfItem(atPath: stamp)[.modificationDate] as? Date) ?? .distantPast
        if !stampOK || stampDate < scriptDate {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", script, "--out", dir, "--tokenizer",
                           Paths.shared + "/fixtures/tokenizer/meta-llama-3.1-8b-instruct/tokenizer.json"]
            p.standardOutput = FileHandle.nullDevice
            try? p.run()
            p.waitUntilExit()
            if p.terminationStatus == 0 { FileManager.default.createFile(atPath: stamp, contents: Data()) }
        }
        return dir
    }()

    static func checkpoint(_ name: String) -> String { checkpoints + "/" + name }
}

/// Read a float32 little-endian .npy (C order) written by numpy.
func readNpyFloat32(_ path: String) throws -> [Float] {
    let d = try Data(contentsOf: URL(fileURLWithPath: path))
    let bytes = [UInt8](d)
    guard bytes.count > 10, bytes[0] == 0x93 else { throw MMError.format("\(path): not .npy") }
    let major = bytes[6]
    let hlen: Int
    let start: Int
    if major == 1 { hlen = Int(bytes[8]) | Int(bytes[9]) << 8; start = 10 } else {
        hlen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24; start = 12
    }
    let header = String(decoding: bytes[start..<start + hlen], as: UTF8.self)
    guard header.contains("<f4"), !header.contains("'fortran_order': True") else { throw MMError.format("\(path): not float32 C order: \(header)") }
    let body = start + hlen
    let n = (bytes.count - body) / 4
    return bytes.withUnsafeBytes { raw in
        (0..<n).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: body + 4 * $0, as: UInt32.self)) }
    }
}

func loadJSON(_ path: String) throws -> JSON {
    try JSON.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), what: path)
}
