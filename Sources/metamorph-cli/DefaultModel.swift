// The model the CLI uses when no --model is given: the small shapes-world MetaMorph that ships in
// the repository (models/shapes, trained by tools/shapes; see docs/shapes.md).
#if canImport(Glibc)
import Glibc
#endif

enum DefaultModel {
    static let relative = "models/shapes"

    /// $METAMORPH_MODEL, else models/shapes in the first ancestor of the executable's real path
    /// that has one (bin/metamorph -> .build/release/metamorph-cli inside a checkout), else
    /// ./models/shapes. nil when none of these holds a config.json.
    static func directory() -> String? {
        if let env = getenv("METAMORPH_MODEL"), env.pointee != 0 { return String(cString: env) }
        var candidates: [String] = []
        if let exe = realpath("/proc/self/exe", nil) {
            var dir = String(cString: exe)
            free(exe)
            while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
                dir = String(dir[..<slash])
                candidates.append(dir + "/" + relative)
            }
        }
        candidates.append(relative)
        return candidates.first { access($0 + "/config.json", R_OK) == 0 }
    }

    /// The visualizer that belongs to a model directory (DIR/visualizer), if it has one.
    static func visualizer(forModel dir: String) -> String? {
        let v = dir + "/visualizer"
        return access(v + "/visualizer.json", R_OK) == 0 || access(v + "/unet/config.json", R_OK) == 0 ? v : nil
    }
}
