// A generation on a background thread that a frame loop polls without blocking.
import MetamorphCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class GenerationJob: @unchecked Sendable {
    struct Shared {
        var pending: [UInt8] = []     // reply text not yet polled (whole UTF-8 characters)
        var stop: StopReason = .none
        var result: GenerationResult? = nil
        var error: MMError? = nil
    }
    public let session: Session
    let parts: [PromptPart]
    let params: GenerationParams
    private let shared = Mutex(Shared())
    private let cancelFlag = Atomic<Bool>(false)
    private var thread: pthread_t? = nil
    private var joined = false
    private let doneLock = Mutex(false)

    public init(session: Session, parts: [PromptPart], params: GenerationParams) {
        self.session = session; self.parts = parts; self.params = params
    }

    /// Start the worker thread. The job holds itself alive until the thread ends.
    public func start() throws {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let job = Unmanaged<GenerationJob>.fromOpaque(arg!).takeRetainedValue()
            job.run()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw MMError(.outOfMemory, "cannot start a worker thread (error \(rc))")
        }
        thread = t
    }

    private func run() {
        do {
            let r = try session.generate(parts, params: params) { [self] text, _ in
                shared.withLock { $0.pending += Array(text.utf8) }
                return !cancelFlag.load(ordering: .acquiring)
            }
            shared.withLock { $0.result = r; $0.stop = r.stopReason }
            if cancelFlag.load(ordering: .acquiring) { _ = session.takeCancel() }
        } catch let e as MMError {
            shared.withLock { $0.error = e; $0.stop = .error }
        } catch {
            shared.withLock { $0.error = MMError(.internalError, "\(error)"); $0.stop = .error }
        }
    }

    /// Latched: a cancel before the worker reaches the model is seen by it.
    public func cancel() {
        cancelFlag.store(true, ordering: .releasing)
        // Only latch the session while the job may still be using it, or the session's next
        // generation would be cancelled by a stale request.
        let finished = shared.withLock { $0.stop != .none }
        if !finished { session.cancel() }
    }

    /// Take up to `capacity` bytes of new text, cut at a character boundary.
    public func poll(capacity: Int) -> ([UInt8], StopReason) {
        shared.withLock { s in
            var n = min(capacity, s.pending.count)
            // Never split a UTF-8 sequence: back up to a lead byte.
            if n < s.pending.count { while n > 0 && (s.pending[n] & 0xC0) == 0x80 { n -= 1 } }
            let out = Array(s.pending[0..<n])
            s.pending.removeFirst(n)
            // Report the end only once all text has been taken.
            return (out, s.pending.isEmpty ? s.stop : .none)
        }
    }

    /// Wait for the worker and return its result.
    public func wait() throws -> GenerationResult {
        let mustJoin = doneLock.withLock { j -> Bool in let r = !j; j = true; return r }
        if mustJoin, let t = thread { pthread_join(t, nil) }
        return try shared.withLock { s in
            if let e = s.error { throw e }
            guard let r = s.result else { throw MMError(.internalError, "job ended without a result") }
            return r
        }
    }
}
