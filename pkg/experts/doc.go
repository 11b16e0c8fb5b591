// Package experts holds the built-in reward experts of the scene world: four small gomlx models
// that play the roles of T2I-R1's GroundingDINO, GIT, HPS v2.1 and the LLaVA outcome reward model
// behind the same rule layer (package reward).
//
//   - Detector: per grid cell, objectness and shape, colour, texture and size classes; every cell
//     yields a box labelled with its most likely shape.
//   - VQA: answers "{attr_noun}?" with P(yes) about an image.
//   - HPS: a preference score for (image, prompt), trained Bradley-Terry on pairs (a faithful render
//     over a degraded or misaligned one).
//   - ORM: P(yes) that an image shows its prompt, an alignment classifier.
//
// The pure-Go backend cannot differentiate convolutions, and the world is cell-aligned, so every
// model reads the image as its grid of 8x8x3 cell patches (one row per cell) and is built from
// matmuls (mlx.Dense). Text reaches the models as word ids from a fixed vocabulary (text.go).
// All four are deliberately small and briefly trained: they are imperfect, and each alone can be
// gamed, which is why the reference ensembles them. `reward-worker train-experts` trains them
// (train.go) from scenes rendered by package scene and prompts drawn by package promptgen, plus
// degraded and misaligned renders (data.go); weights are stored as safetensors files with a
// checksum (weights.go); `reward-worker experts-eval` measures them (eval.go).
package experts
