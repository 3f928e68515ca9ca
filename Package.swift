// swift-tools-version:6.0
// metamorph: MetaMorph inference on the CPU. See README.md for the layout.
import PackageDescription

// OpenMP comes from libomp-dev (LLVM 14's omp.h); the Swift toolchain's clang has no omp.h of its own.
let ompInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"
let ompLib = "/usr/lib/llvm-14/lib"

let swiftFlags: [SwiftSetting] = []

let package = Package(
    name: "metamorph",
    products: [
        // libmetamorph.so: the C ABI of include/metamorph.h.
        .library(name: "metamorph", type: .dynamic, targets: ["Metamorph"]),
        .executable(name: "metamorph-cli", targets: ["metamorph-cli"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .target(
            name: "MetamorphKernels",
            dependencies: ["COpenBLAS"],
            path: "Sources/MetamorphKernels",
            cSettings: [
                .unsafeFlags(["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-I\(ompInclude)"]),
            ],
            linkerSettings: [
                .unsafeFlags(["-L\(ompLib)", "-Xlinker", "-rpath", "-Xlinker", ompLib]),
                .linkedLibrary("omp"),
            ]),
        .target(name: "MetamorphCore", dependencies: ["MetamorphKernels"], swiftSettings: swiftFlags),
        .target(name: "MetamorphTokenizer", dependencies: [], swiftSettings: swiftFlags),
        .target(name: "MetamorphModels", dependencies: ["MetamorphCore", "MetamorphKernels"], swiftSettings: swiftFlags),
        .target(name: "MetamorphRuntime",
                dependencies: ["MetamorphModels", "MetamorphTokenizer", "MetamorphCore", "MetamorphKernels"],
                swiftSettings: swiftFlags),
        .target(name: "MetamorphVisualizer", dependencies: ["MetamorphCore", "MetamorphKernels", "MetamorphModels"]),
        .systemLibrary(name: "CMetamorphABI", path: "Sources/CMetamorphABI"),
        .target(name: "Metamorph", dependencies: ["MetamorphRuntime", "MetamorphVisualizer", "CMetamorphABI"], swiftSettings: swiftFlags),
        // PNG/JPEG for the CLI only (libpng-dev, libjpeg-dev); the library itself takes pixels.
        .target(name: "MetamorphImageIO", path: "Sources/MetamorphImageIO",
                linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg")]),
        .executableTarget(
            name: "metamorph-cli",
            dependencies: ["MetamorphImageIO", "MetamorphRuntime", "MetamorphVisualizer", "MetamorphTokenizer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftFlags),
        .testTarget(name: "MetamorphTokenizerTests", dependencies: ["MetamorphTokenizer"]),
        .testTarget(name: "MetamorphKernelsTests", dependencies: ["MetamorphKernels"]),
        .testTarget(name: "MetamorphEngineTests", dependencies: ["MetamorphRuntime"]),
        .testTarget(name: "SiglipTests", dependencies: ["MetamorphRuntime"]),
        .testTarget(name: "VisualizerTests", dependencies: ["MetamorphVisualizer"]),
    ],
    // Swift 5 language mode: the C ABI layer deals in raw pointers and C globals by design.
    swiftLanguageModes: [.v5]
)
