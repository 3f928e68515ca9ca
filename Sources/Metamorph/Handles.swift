// Handle bookkeeping for the C ABI. Every handle given to a host is registered; every handle a
// host passes back is checked against the registry first, so a NULL, foreign or already-freed
// pointer becomes MM_ERR_INVALID_ARGUMENT instead of a crash inside the host's process.
import MetamorphCore
import MetamorphRuntime
import MetamorphTokenizer
import MetamorphVisualizer
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

enum HandleKind: Sendable { case model, session, tokenizer, result, job, visualizer, picture }

final class Registry: Sendable {
    let live = Mutex<[UnsafeMutableRawPointer: HandleKind]>([:])
    static let shared = Registry()

    func register(_ obj: AnyObject, _ kind: HandleKind) -> OpaquePointer {
        let p = Unmanaged.passRetained(obj).toOpaque()
        live.withLock { $0[p] = kind }
        return OpaquePointer(p)
    }

    func lookup<T: AnyObject>(_ p: OpaquePointer?, _ kind: HandleKind, as: T.Type, what: String) throws -> T {
        guard let p else { throw MMError.invalidArgument("\(what) is NULL") }
        let raw = UnsafeMutableRawPointer(p)
        let ok = live.withLock { $0[raw] == kind }
        guard ok else { throw MMError.invalidArgument("\(what) is not a live metamorph handle (already freed, or another kind)") }
        return Unmanaged<T>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Remove and release; false if it was not live.
    @discardableResult
    func release(_ p: OpaquePointer?, _ kind: HandleKind) -> Bool {
        guard let p else { return false }
        let raw = UnsafeMutableRawPointer(p)
        let ok = live.withLock { d -> Bool in
            guard d[raw] == kind else { return false }
            d[raw] = nil
            return true
        }
        if ok { Unmanaged<AnyObject>.fromOpaque(raw).release() }
        return ok
    }
}

/// A NUL-terminated copy of a Swift string that lives as long as its owner.
final class CString: @unchecked Sendable {
    let ptr: UnsafeMutablePointer<CChar>
    init(_ s: String) { ptr = strdup(s) ?? strdup("")! }
    deinit { free(ptr) }
}

final class TokenizerBox: @unchecked Sendable {
    let tokenizer: Tokenizer
    let borrowed: Bool      // owned by a model: mm_tokenizer_free must refuse it
    init(_ t: Tokenizer, borrowed: Bool) { tokenizer = t; self.borrowed = borrowed }
}

final class ModelBox: @unchecked Sendable {
    let model: Model
    let typeName: CString
    var tokenizerHandle: OpaquePointer? = nil
    let sessions = Atomic<Int>(0)
    init(_ m: Model) { model = m; typeName = CString(m.modelType) }
}

final class SessionBox: @unchecked Sendable {
    let session: Session
    let owner: ModelBox
    let jobs = Atomic<Int>(0)
    init(_ s: Session, owner: ModelBox) { session = s; self.owner = owner }
}

final class VisualizerBox: @unchecked Sendable {
    let visualizer: Visualizer
    let lock = Mutex(())       // renders on one visualizer run one at a time
    init(_ v: Visualizer) { visualizer = v }
}

final class PictureBox: @unchecked Sendable {
    let width: Int, height: Int
    let pixels: UnsafeMutablePointer<UInt8>
    let ownedByResult: Bool
    init(_ img: RenderedImage, ownedByResult: Bool) {
        width = img.width; height = img.height; self.ownedByResult = ownedByResult
        pixels = .allocate(capacity: max(1, img.rgb.count))
        pixels.initialize(from: img.rgb, count: img.rgb.count)
    }
    deinit { pixels.deallocate() }
}

final class ResultBox: @unchecked Sendable {
    var pictures: [OpaquePointer] = []     // registered PictureBoxes, released with the result
    let result: GenerationResult
    let text: CString
    let loadMilliseconds: Double
    // Stable C copies of the arrays, alive as long as the result.
    let tokens: UnsafeMutablePointer<Int32>
    let promptTokens: UnsafeMutablePointer<Int32>
    let logits: UnsafeMutablePointer<Float>?
    init(_ r: GenerationResult, loadMilliseconds: Double = 0) {
        result = r; text = CString(r.text); self.loadMilliseconds = loadMilliseconds
        tokens = .allocate(capacity: max(1, r.tokens.count))
        tokens.initialize(from: r.tokens, count: r.tokens.count)
        promptTokens = .allocate(capacity: max(1, r.promptTokens.count))
        promptTokens.initialize(from: r.promptTokens, count: r.promptTokens.count)
        if let l = r.firstLogits {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, l.count))
            p.initialize(from: l, count: l.count)
            logits = p
        } else { logits = nil }
    }
    deinit {
        tokens.deallocate(); promptTokens.deallocate(); logits?.deallocate()
        for p in pictures { Registry.shared.release(p, .picture) }
    }
}

final class JobBox: @unchecked Sendable {
    let job: GenerationJob
    let owner: SessionBox
    let waited = Atomic<Bool>(false)
    init(_ j: GenerationJob, owner: SessionBox) { job = j; self.owner = owner }
}

// MARK: errors and logging

private let errorKey: pthread_key_t = {
    var k = pthread_key_t()
    pthread_key_create(&k) { p in free(p) }
    return k
}()

func setLastError(_ message: String) {
    let old = pthread_getspecific(errorKey)
    pthread_setspecific(errorKey, strdup(message))
    free(old)
}

func lastErrorPointer() -> UnsafePointer<CChar> {
    if let p = pthread_getspecific(errorKey) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
    return emptyCString
}
let emptyCString: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

struct LogSink: @unchecked Sendable {
    var fn: (@convention(c) (Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void)?
    var user: UnsafeMutableRawPointer?
    var minLevel: Int32
}
let logSink = Mutex(LogSink(fn: nil, user: nil, minLevel: 1))

func log(_ level: Int32, _ message: String) {
    let sink = logSink.withLock { $0 }
    guard let fn = sink.fn, level >= sink.minLevel else { return }
    message.withCString { fn(level, $0, sink.user) }
}

/// Run an ABI body: errors become status codes plus the thread's last-error message.
@inline(__always)
func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        return 0
    } catch let e as MMError {
        setLastError(e.message)
        log(3, e.message)
        return e.code.rawValue
    } catch {
        setLastError("\(error)")
        return MMError.Code.internalError.rawValue
    }
}

let defaultThreads = Atomic<Int>(0)
func resolvedDefaultThreads() -> Int {
    let d = defaultThreads.load(ordering: .relaxed)
    if d > 0 { return d }
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return max(1, Int(n))
}
