package pb

// UnknownBytes is the encoding of the fields of e that the .proto files
// lack, which e.ProtoReflect().GetUnknown() also returns, but without
// registering this package's descriptors (see doc.go): restore's pagemap
// decoder asks it of every entry.
func (x *PagemapEntry) UnknownBytes() []byte {
	if x == nil {
		return nil
	}
	return x.unknownFields
}
