package image

// NewBytesReader is a Reader of data made by ResetBytes, for the tests
// that compare it with a Reader on a stream.
func NewBytesReader(data []byte, name string, kind *Kind, limits Limits) (*Reader, error) {
	rd := &Reader{}
	if err := rd.ResetBytes(data, name, kind, limits); err != nil {
		return nil, err
	}
	return rd, nil
}
