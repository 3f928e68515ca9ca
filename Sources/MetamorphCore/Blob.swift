// Bytes of a checkpoint file: memory-mapped read-only (the default, so weights are used in place
// and shared by the page cache), read into the heap, or borrowed from the host (asset packs).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class Blob: @unchecked Sendable {
    public enum Kind: Sendable { case mapped, heap, borrowed }
    public let base: UnsafeRawPointer
    public let count: Int
    public let kind: Kind

    private init(base: UnsafeRawPointer, count: Int, kind: Kind) {
        self.base = base; self.count = count; self.kind = kind
    }

    deinit {
        switch kind {
        case .mapped: if count > 0 { munmap(UnsafeMutableRawPointer(mutating: base), count) }
        case .heap: free(UnsafeMutableRawPointer(mutating: base))
        case .borrowed: break
        }
    }

    public var bytes: UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: count)
    }

    /// Map (or read) a whole file.
    public static func open(path: String, mmap useMmap: Bool = true) throws -> Blob {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw MMError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw MMError.io("cannot stat \(path): \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw MMError.io("\(path) is not a regular file") }
        let size = Int(st.st_size)
        if size == 0 {
            let p = malloc(1)!
            return Blob(base: UnsafeRawPointer(p), count: 0, kind: .heap)
        }
        if useMmap {
            let p = Glibc.mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            if p == MAP_FAILED || p == nil { throw MMError.io("cannot map \(path): \(String(cString: strerror(errno)))") }
            return Blob(base: UnsafeRawPointer(p!), count: size, kind: .mapped)
        }
        guard let p = malloc(size) else { throw MMError(.outOfMemory, "cannot allocate \(size) bytes for \(path)") }
        var done = 0
        while done < size {
            let r = read(fd, p + done, size - done)
            if r <= 0 {
                free(p)
                throw MMError.io("cannot read \(path): \(r < 0 ? String(cString: strerror(errno)) : "short read")")
            }
            done += r
        }
        return Blob(base: UnsafeRawPointer(p), count: size, kind: .heap)
    }

    /// Copy host bytes (aligned to 64 so tensors keep their alignment).
    public static func copy(_ src: UnsafeRawPointer?, count: Int) throws -> Blob {
        var p: UnsafeMutableRawPointer? = nil
        if posix_memalign(&p, 64, max(count, 1)) != 0 || p == nil {
            throw MMError(.outOfMemory, "cannot allocate \(count) bytes")
        }
        if count > 0, let src { memcpy(p!, src, count) }
        return Blob(base: UnsafeRawPointer(p!), count: count, kind: .heap)
    }

    /// Use host bytes in place; the host keeps them alive while the model lives.
    public static func borrow(_ src: UnsafeRawPointer, count: Int) -> Blob {
        Blob(base: src, count: count, kind: .borrowed)
    }

    public func toArray() -> [UInt8] { withExtendedLifetime(self) { Array(bytes) } }

    /// Parse the whole blob as JSON (keeps the blob alive while its bytes are read).
    public func json(what: String) throws -> JSON {
        try withExtendedLifetime(self) { try JSON.parse(bytes, what: what) }
    }
}

/// The files of a checkpoint: a directory on disk, or named blobs handed over by the host.
public struct CheckpointFiles: Sendable {
    public let label: String
    let directory: String?
    let memory: [String: Blob]
    let useMmap: Bool

    public init(directory: String, useMmap: Bool = true) {
        self.label = directory; self.directory = directory; self.memory = [:]; self.useMmap = useMmap
    }
    public init(memory: [String: Blob]) {
        self.label = "<memory>"; self.directory = nil; self.memory = memory; self.useMmap = false
    }

    /// A file name inside the checkpoint; names that would escape it are refused.
    static func checkName(_ name: String) throws {
        if name.isEmpty || name.hasPrefix("/") || name.split(separator: "/").contains("..") || name.contains("\0") {
            throw MMError.format("file name \"\(name)\" points outside the checkpoint directory")
        }
    }

    public func exists(_ name: String) -> Bool {
        if let directory { return access(directory + "/" + name, R_OK) == 0 }
        return memory[name] != nil
    }

    public func open(_ name: String) throws -> Blob {
        try CheckpointFiles.checkName(name)
        if let directory { return try Blob.open(path: directory + "/" + name, mmap: useMmap) }
        guard let b = memory[name] else { throw MMError.io("\(name) is not among the files given in memory") }
        return b
    }

    public func path(_ name: String) -> String? { directory.map { $0 + "/" + name } }
}
