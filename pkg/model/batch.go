package model

// Batch is a teacher-forced training batch: full sequences with their loss masks, the input of
// SupervisedLossGraph. It lives here rather than beside the supervised trainer (pkg/pretrain)
// because the RL learner's supervised anchor takes the same batches.
type Batch struct {
	Tokens    [][]int32
	TextMask  [][]float32 // [N][TextLen]
	ImageMask [][]float32 // [N][ImageTokens]
}
